//! The mock push backend, run inside the test process.

use std::net::{Ipv4Addr, SocketAddr};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::mock_push_backend::{serve, serve_tls, tls_acceptor, Received, ReceivedRequest};

/// Interval at which [`MockBackend::wait_for_requests`] checks the records.
const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// Mock push backend on its own thread and single-threaded tokio runtime,
/// listening on a free port of 127.0.0.1.
///
/// Dropping it stops the server: the listener and all connections are closed
/// before `drop` returns, so connecting to [`MockBackend::addr`] afterwards is
/// refused.
pub struct MockBackend {
    addr: SocketAddr,
    /// Set when the mock serves HTTPS.
    tls: bool,
    received: Received,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl MockBackend {
    /// Starts the mock. Panics when the port or the runtime cannot be set up.
    pub fn start() -> MockBackend {
        Self::start_with(None)
    }

    /// Starts the mock serving HTTPS with a PEM certificate chain and key.
    /// Panics when they do not form a usable certificate.
    pub fn start_tls(cert_pem: &str, key_pem: &str) -> MockBackend {
        let acceptor = tls_acceptor(cert_pem.as_bytes(), key_pem.as_bytes())
            .unwrap_or_else(|err| panic!("failed to set up TLS for the mock backend: {err}"));
        Self::start_with(Some(acceptor))
    }

    fn start_with(acceptor: Option<tokio_rustls::TlsAcceptor>) -> MockBackend {
        let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .unwrap_or_else(|err| panic!("failed to bind the mock backend to 127.0.0.1:0: {err}"));
        let addr = listener
            .local_addr()
            .expect("a bound listener has a local address");
        super::reserve_port(addr.port());
        listener
            .set_nonblocking(true)
            .expect("failed to make the mock backend listener non-blocking");

        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("failed to build the tokio runtime for the mock backend");
        let listener = {
            let _context = runtime.enter();
            tokio::net::TcpListener::from_std(listener)
                .expect("failed to register the mock backend listener with tokio")
        };

        let received = Received::new();
        let (shutdown, shutdown_signal) = oneshot::channel::<()>();
        let served = received.clone();
        let tls = acceptor.is_some();
        let thread = std::thread::Builder::new()
            .name(format!("mock-backend-{}", addr.port()))
            .spawn(move || {
                runtime.block_on(async move {
                    let server = async {
                        match acceptor {
                            Some(acceptor) => serve_tls(listener, acceptor, served).await,
                            None => serve(listener, served).await,
                        }
                    };
                    tokio::select! {
                        () = server => {}
                        // Both a sent signal and a dropped sender stop the mock.
                        _ = shutdown_signal => {}
                    }
                });
                // Dropping the runtime here drops the connection tasks, which
                // closes their sockets.
                drop(runtime);
            })
            .expect("failed to spawn the mock backend thread");

        MockBackend {
            addr,
            tls,
            received,
            shutdown: Some(shutdown),
            thread: Some(thread),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Returns the base URL, `http://127.0.0.1:PORT`, or `https://` when it serves HTTPS.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// Returns a copy of the recorded requests, oldest first.
    pub fn requests(&self) -> Vec<ReceivedRequest> {
        self.received.snapshot()
    }

    /// Removes all recorded requests.
    pub fn clear(&self) {
        self.received.clear();
    }

    /// Sets the status that `GET .../health` responds with, such as 503 to
    /// fail the gateway's health checks while pushes still get through.
    pub fn set_health_status(&self, status: u16) {
        let status = http::StatusCode::from_u16(status)
            .unwrap_or_else(|err| panic!("invalid health status {status}: {err}"));
        self.received.set_health_status(status);
    }

    /// Waits until at least `count` requests are recorded and returns them.
    /// Panics after `timeout`, naming how many arrived.
    pub fn wait_for_requests(&self, count: usize, timeout: Duration) -> Vec<ReceivedRequest> {
        let deadline = Instant::now() + timeout;
        loop {
            let requests = self.received.snapshot();
            if requests.len() >= count {
                return requests;
            }
            if Instant::now() >= deadline {
                panic!(
                    "mock backend recorded {} requests within {timeout:?}, expected at least {count}",
                    requests.len()
                );
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// Stops the mock, the same as dropping it.
    pub fn stop(self) {
        drop(self);
    }
}

impl Drop for MockBackend {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            // An error means the server thread has already ended.
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            // A panic on the server thread was already printed, and panicking
            // again inside `drop` would abort the test process.
            let _ = thread.join();
        }
    }
}
