"""Render deploy/nginx/nginx.conf.template for the local topology (deploy/local_cluster.sh).

    python deploy/render_nginx.py local --run-dir DIR --listen PORT \
        --server 127.0.0.1:18001 --server 127.0.0.1:18002 [--user NAME] [-o FILE]

It takes --max-body-mb (the app's MAX_BODY_MB, default 400) and --timeout (gunicorn's
GUNICORN_TIMEOUT, default 300). Standard library only: it runs before any virtualenv exists.
The compose topology uses HAProxy instead (deploy/haproxy/haproxy.cfg): it finds replicas
through Docker's DNS and health-checks them, which Debian's nginx 1.22 cannot.
"""

import argparse
import re
import sys
from pathlib import Path

TEMPLATE = Path(__file__).parent / "nginx" / "nginx.conf.template"

DEFAULT_MAX_BODY_MB = 400
DEFAULT_TIMEOUT_S = 300
# nginx waits this much longer than gunicorn so gunicorn's timeout always fires first.
TIMEOUT_MARGIN_S = 10
# One failed attempt takes a replica out of rotation for this long, then it is tried again.
FAIL_TIMEOUT = "10s"

FIELD = re.compile(r"\{\{ *(\w+) *\}\}")


def render(fields):
    """Fill every ``{{ name }}`` of the template; a missing or unused field is an error."""
    text = TEMPLATE.read_text()
    used = set(FIELD.findall(text))
    missing = used - fields.keys()
    unused = fields.keys() - used
    if missing or unused:
        raise KeyError(f"template fields missing: {sorted(missing)}, unknown: {sorted(unused)}")
    return FIELD.sub(lambda m: str(fields[m.group(1)]), text)


def server_lines(addresses):
    """One ``server`` line per replica address, with the passive health-check settings."""
    return "\n        ".join(f"server {address} max_fails=1 fail_timeout={FAIL_TIMEOUT};" for address in addresses)


def local_fields(args):
    """The local topology: fixed 127.0.0.1 replicas, every path inside the run directory."""
    run_dir = Path(args.run_dir).resolve()
    return {
        "max_body_mb": args.max_body_mb,
        "proxy_timeout": args.timeout + TIMEOUT_MARGIN_S,
        # Only meaningful when started by root: workers then keep the caller's identity
        # instead of nginx's default `nobody`, which could not write the temp paths.
        "user": f"user {args.user};" if args.user else "# user: nginx runs as whoever starts it",
        "pid_path": run_dir / "nginx.pid",
        "error_log": run_dir / "nginx-error.log",
        "access_log": run_dir / "nginx-access.log",
        "temp_dir": run_dir / "nginx-temp",
        "servers": server_lines(args.server),
        "listen": args.listen,
    }


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    topologies = parser.add_subparsers(dest="topology", required=True)
    local = topologies.add_parser("local", help="deploy/local_cluster.sh load balancer")
    local.add_argument("--run-dir", required=True, help="pid, logs and temp files go here")
    local.add_argument("--listen", type=int, required=True, help="port nginx listens on")
    local.add_argument("--server", action="append", required=True, help="replica HOST:PORT")
    local.add_argument("--user", help="user for nginx workers when started as root")
    local.add_argument("--max-body-mb", type=int, default=DEFAULT_MAX_BODY_MB)
    local.add_argument("--timeout", type=int, default=DEFAULT_TIMEOUT_S, help="gunicorn worker timeout in seconds")
    local.add_argument("-o", "--output", help="file to write (default: stdout)")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    text = render(local_fields(args))
    if args.output is None:
        sys.stdout.write(text)
    else:
        Path(args.output).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
