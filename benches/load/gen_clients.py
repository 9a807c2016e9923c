#!/usr/bin/env python3
"""Write one client set for the load comparison: a keygate config, the
matching nginx map and the wrk request definitions.

Usage: gen_clients.py [--rate-limit LIMIT] [--alternate]
                      OUT_DIR NAME COUNT GATEWAY_PORT METRICS_PORT UPSTREAM_PORT

Files written to OUT_DIR (mode 0600, because they contain keys):
  NAME.keygate.yml     keygate config with COUNT clients and one worker thread
  NAME.nginx-map.conf  nginx `map` from the x-api-key value to the clientId
  NAME.good.lua        wrk request: a push with a configured client's key
  NAME.bad.lua         wrk request: the same push with a wrong key for that client
  NAME.client-id       the clientId that the wrk requests use (no key)

--rate-limit LIMIT gives every client `rateLimit: LIMIT` (for example
1000000/s). --alternate also writes NAME.alt.keygate.yml: the same settings
and COUNT clients, where the client of the wrk requests keeps its key and
every other client is replaced by a new clientId with a new key, so that a
refresh from one file to the other adds and removes COUNT - 1 clients.

Keys are 64 hex characters from the OS CSPRNG, the same format keygate's
generateclient produces. Nothing is printed, so no key reaches a terminal.
"""

import argparse
import base64
import os
import secrets
import sys

PUSH_PATH = "/nps/rest/push/p1"
PUSH_BODY = '{"title":"load","body":"keygate load comparison"}'


def make_client_id(index, prefix="load-client"):
    return f"{prefix}-{index:06d}"


def header_value(client_id, key):
    return base64.b64encode(f"{client_id}:{key}".encode()).decode()


def open_private(path):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    return os.fdopen(fd, "w")


def write_keygate_config(path, clients, gateway_port, metrics_port, upstream_port, rate_limit):
    with open_private(path) as out:
        out.write("gateway:\n")
        out.write(f"  listen: 127.0.0.1:{gateway_port}\n")
        out.write(f"  upstream: http://127.0.0.1:{upstream_port}\n")
        out.write("  forwardRefresh: false\n")
        out.write("  threads: 1\n")
        out.write("  log:\n    level: warn\n    access: false\n")
        out.write(f"  metrics:\n    listen: 127.0.0.1:{metrics_port}\n")
        out.write("allowedClients:\n")
        for client_id, key in clients:
            out.write(f"  - clientId: {client_id}\n    key: \"{key}\"\n")
            if rate_limit is not None:
                out.write(f"    rateLimit: \"{rate_limit}\"\n")


def write_nginx_map(path, clients):
    with open_private(path) as out:
        out.write("map $http_x_api_key $client_id {\n    default \"\";\n")
        for client_id, key in clients:
            out.write(f"    \"{header_value(client_id, key)}\" {client_id};\n")
        out.write("}\n")


def write_request(path, api_key_header):
    with open_private(path) as out:
        out.write('wrk.method = "POST"\n')
        out.write(f'wrk.path = "{PUSH_PATH}"\n')
        out.write(f"wrk.body = '{PUSH_BODY}'\n")
        out.write('wrk.headers["Content-Type"] = "application/json"\n')
        out.write(f'wrk.headers["x-api-key"] = "{api_key_header}"\n')


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate-limit", metavar="LIMIT", help="rateLimit of every client, e.g. 1000000/s")
    parser.add_argument("--alternate", action="store_true", help="also write NAME.alt.keygate.yml")
    parser.add_argument("out_dir")
    parser.add_argument("name")
    for number in ("count", "gateway_port", "metrics_port", "upstream_port"):
        parser.add_argument(number, type=int)
    args = parser.parse_args(argv[1:])
    if args.count < 1:
        parser.error(f"COUNT must be at least 1, got {args.count}")
    return args


def main(argv):
    args = parse_args(argv)
    count, out_dir, name = args.count, args.out_dir, args.name
    ports = (args.gateway_port, args.metrics_port, args.upstream_port)

    clients = [(make_client_id(i), secrets.token_hex(32)) for i in range(1, count + 1)]
    write_keygate_config(
        os.path.join(out_dir, f"{name}.keygate.yml"), clients, *ports, args.rate_limit
    )
    write_nginx_map(os.path.join(out_dir, f"{name}.nginx-map.conf"), clients)

    # The load uses a client from the middle of the list. The wrong key
    # belongs to the same client, so keygate rejects it as bad_key.
    loaded = count // 2
    client_id, key = clients[loaded]
    write_request(os.path.join(out_dir, f"{name}.good.lua"), header_value(client_id, key))
    wrong_key = secrets.token_hex(32)
    write_request(os.path.join(out_dir, f"{name}.bad.lua"), header_value(client_id, wrong_key))
    with open_private(os.path.join(out_dir, f"{name}.client-id")) as out:
        out.write(f"{client_id}\n")

    if args.alternate:
        others = [
            (make_client_id(i, "load-client-alt"), secrets.token_hex(32))
            for i in range(1, count + 1)
        ]
        others[loaded] = clients[loaded]
        write_keygate_config(
            os.path.join(out_dir, f"{name}.alt.keygate.yml"), others, *ports, args.rate_limit
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
