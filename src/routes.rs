//! Routing on the normalised request path.
//!
//! The path is split into segments, empty segments are skipped, each
//! segment's `;` parameters are set aside and its percent-encoding is
//! decoded. That is how common Java backends read a path, so a request that
//! reaches the backend's admin routes by another spelling is routed here as
//! the admin route it is. Paths that hide structure (dot segments, an
//! encoded `/` or `\`, a `;` parameter in the context prefix) are refused.

use std::borrow::Cow;

use percent_encoding::percent_decode;
use smallvec::SmallVec;

use crate::config::GatewaySettings;

/// The destination of a request.
#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    /// Outside the context path: 404, the backend is never asked.
    NotFound,
    /// A path that hides its structure: 400.
    BadPath,
    Health,
    Readiness,
    Refresh,
    /// The decoded clientId segment, or `None` when there is not exactly one segment.
    GenerateClient(Option<Vec<u8>>),
    /// Checked, then forwarded.
    Proxy,
}

/// The fixed segments of the routes, taken from one snapshot's settings.
#[derive(Debug)]
pub struct Routes {
    context: Vec<String>,
    /// uriBase segments followed by `util`, `generateclient`.
    generate_client: Vec<String>,
    /// The context path as written in requests, `/nps`, for forwarding refreshes.
    pub context_path: String,
}

impl Routes {
    pub fn new(settings: &GatewaySettings) -> Self {
        let context = settings
            .context_path
            .segments()
            .map(str::to_string)
            .collect();
        let mut generate_client: Vec<String> =
            settings.uri_base.segments().map(str::to_string).collect();
        generate_client.extend(["util".to_string(), "generateclient".to_string()]);
        Routes {
            context,
            generate_client,
            context_path: settings.context_path.0.clone(),
        }
    }

    /// Returns the path of the refresh route, such as `/nps/refresh`.
    pub fn refresh_path(&self) -> String {
        format!("{}/refresh", self.context_path)
    }

    /// Classifies a request path (without its query).
    pub fn classify(&self, path: &str) -> Route {
        if !path.starts_with('/') || hides_structure(path) {
            return if path.starts_with('/') {
                Route::BadPath
            } else {
                Route::NotFound
            };
        }

        // Paths of up to 8 segments, the usual case, are classified without allocating.
        let mut segments: SmallVec<[(Cow<'_, [u8]>, bool); 8]> = SmallVec::new();
        for raw in path.split('/').filter(|segment| !segment.is_empty()) {
            let (name, has_parameter) = match raw.split_once(';') {
                Some((name, _)) => (name, true),
                None => (raw, false),
            };
            let decoded: Cow<'_, [u8]> = percent_decode(name.as_bytes()).into();
            if matches!(&*decoded, b"." | b"..") {
                return Route::BadPath;
            }
            segments.push((decoded, has_parameter));
        }

        // Only paths strictly below the context path are served.
        let context_length = self.context.len();
        let below_context = segments.len() > context_length
            || (path.ends_with('/') && segments.len() == context_length);
        if !below_context
            || !self
                .context
                .iter()
                .zip(&segments)
                .all(|(want, (got, _))| want.as_bytes() == &**got)
        {
            return Route::NotFound;
        }
        if segments[..context_length]
            .iter()
            .any(|(_, has_parameter)| *has_parameter)
        {
            return Route::BadPath;
        }

        let rest = &segments[context_length..];
        let words: SmallVec<[&[u8]; 8]> = rest.iter().map(|(segment, _)| &**segment).collect();
        match words.as_slice() {
            [b"refresh"] => return Route::Refresh,
            [b"health"] => return Route::Health,
            [b"health", b"readiness"] => return Route::Readiness,
            _ => {}
        }
        let base_length = self.generate_client.len();
        if words.len() >= base_length
            && self
                .generate_client
                .iter()
                .zip(&words)
                .all(|(want, got)| want.as_bytes() == *got)
        {
            return match &rest[base_length..] {
                [(id, _)] => Route::GenerateClient(Some(id.to_vec())),
                _ => Route::GenerateClient(None),
            };
        }
        Route::Proxy
    }
}

/// Encoded `/` or `\`, or a literal `\`, anywhere in the path.
fn hides_structure(path: &str) -> bool {
    if path.contains('\\') {
        return true;
    }
    let bytes = path.as_bytes();
    bytes.windows(3).any(|window| {
        window[0] == b'%' && window[1] == b'2' && (window[2] | 0x20) == b'f'
            || window[0] == b'%' && window[1] == b'5' && (window[2] | 0x20) == b'c'
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routes() -> Routes {
        Routes::new(&GatewaySettings::default())
    }

    fn id(route: Route) -> Option<Vec<u8>> {
        match route {
            Route::GenerateClient(id) => id,
            other => panic!("expected GenerateClient, got {other:?}"),
        }
    }

    #[test]
    fn fixed_routes() {
        let routes = routes();
        assert_eq!(routes.classify("/nps/refresh"), Route::Refresh);
        assert_eq!(routes.classify("/nps/health"), Route::Health);
        assert_eq!(routes.classify("/nps/health/readiness"), Route::Readiness);
        assert_eq!(routes.classify("/nps/rest/push/p1"), Route::Proxy);
        assert_eq!(routes.classify("/nps/"), Route::Proxy);
    }

    #[test]
    fn outside_context() {
        let routes = routes();
        assert_eq!(routes.classify("/"), Route::NotFound);
        assert_eq!(routes.classify("/nps"), Route::NotFound);
        assert_eq!(routes.classify("/npsx/rest"), Route::NotFound);
        assert_eq!(routes.classify("/other/nps/refresh"), Route::NotFound);
        assert_eq!(routes.classify("*"), Route::NotFound);
    }

    #[test]
    fn other_spellings_of_admin_routes() {
        let routes = routes();
        assert_eq!(routes.classify("//nps//refresh"), Route::Refresh);
        assert_eq!(routes.classify("/nps/refresh;jsessionid=1"), Route::Refresh);
        assert_eq!(routes.classify("/nps/%72efresh"), Route::Refresh);
        assert_eq!(routes.classify("/%6eps/refresh"), Route::Refresh);
        assert_eq!(routes.classify("/nps/refresh/"), Route::Refresh);
    }

    #[test]
    fn hidden_structure_rejected() {
        let routes = routes();
        for path in [
            "/nps/../refresh",
            "/nps/./refresh",
            "/nps/rest/%2e%2e/refresh",
            "/nps/rest/%2E/x",
            "/nps%2frefresh",
            "/nps/rest%2Fpush",
            "/nps/rest/%5cpush",
            "/nps\\refresh",
            "/nps;x/refresh",
            "/nps/..;x/refresh",
        ] {
            assert_eq!(routes.classify(path), Route::BadPath, "{path}");
        }
    }

    #[test]
    fn generate_client_ids() {
        let routes = routes();
        assert_eq!(
            id(routes.classify("/nps/rest/util/generateclient/karolin")),
            Some(b"karolin".to_vec())
        );
        assert_eq!(
            id(routes.classify("/nps/rest/util/generateclient/caf%C3%A9")),
            Some("café".as_bytes().to_vec())
        );
        assert_eq!(
            id(routes.classify("/nps/rest/util/generateclient/a%3Ab")),
            Some(b"a:b".to_vec())
        );
        assert_eq!(id(routes.classify("/nps/rest/util/generateclient/")), None);
        assert_eq!(id(routes.classify("/nps/rest/util/generateclient")), None);
        assert_eq!(
            id(routes.classify("/nps/rest/util/generateclient/a/b")),
            None
        );
    }

    #[test]
    fn root_context_path() {
        let settings = GatewaySettings {
            context_path: crate::config::RoutePrefix::parse("/").unwrap(),
            ..GatewaySettings::default()
        };
        let routes = Routes::new(&settings);
        assert_eq!(routes.classify("/refresh"), Route::Refresh);
        assert_eq!(routes.classify("/rest/push/p1"), Route::Proxy);
        assert_eq!(routes.classify("/"), Route::Proxy);
    }
}
