"""Render deploy/nginx/nginx.conf.template for the local topology (deploy/local_cluster.sh).

    python deploy/render_nginx.py local --run-dir DIR --listen PORT \
        --server 127.0.0.1:18001 --server 127.0.0.1:18002 [--user NAME] [-o FILE]

It takes --max-body-mb (the app's MAX_BODY_MB, default 400), --timeout (gunicorn's
GUNICORN_TIMEOUT, default 300), and the rate limit: --rate-limit-rps (0, the default, turns it
off), --rate-limit-burst and --rate-key (``address``, or ``key`` to count each API key apart).
Standard library only: it runs before any virtualenv exists.
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

DEFAULT_RATE_LIMIT_BURST = 20
# Size of the rate limits' shared memory: about 16,000 clients per megabyte (nginx's own figure
# for addresses; longer keys take more).
RATE_LIMIT_ZONE, RATE_LIMIT_ZONE_SIZE = "per_client", "10m"
# With keys on, a request that sends exactly one key header counts against that key: the token
# of Authorization, or X-API-Key. One with neither, or both, counts against its address (a
# valid key beside a changing other header must not make a new budget per request). The two
# headers are joined with "|" to be told apart in one map; a header holding "|" counts as none.
RATE_KEY_MAP = r'''map "$http_authorization|$http_x_api_key" $rate_limit_key {
        default                 $binary_remote_addr;
        "~^[^ |]+ +([^ |]+)\|$"  "key:$1";
        "~^\|([^|]+)$"          "key:$1";
    }'''

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


def rate_limit_fields(rps, burst, key):
    """The ``limit_req`` zone (http block) and rule (server block); comments when ``rps`` is 0."""
    if rps < 0 or burst < 0:
        raise ValueError(f"rate limits must not be negative, got rps={rps} burst={burst}")
    if rps == 0:
        off = "# rate limits off (RATE_LIMIT_RPS=0)"
        return {"rate_limit_zone": off, "rate_limit": off}
    zone_key = "$rate_limit_key" if key == "key" else "$binary_remote_addr"
    zone = f"limit_req_zone {zone_key} zone={RATE_LIMIT_ZONE}:{RATE_LIMIT_ZONE_SIZE} rate={rps}r/s;"
    if key == "key":
        zone = f"{RATE_KEY_MAP}\n    {zone}"
    rule = "\n        ".join([f"limit_req zone={RATE_LIMIT_ZONE} burst={burst} nodelay;", "limit_req_status 429;",
                                 "limit_req_log_level warn;"])
    return {"rate_limit_zone": zone, "rate_limit": rule}


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
        **rate_limit_fields(args.rate_limit_rps, args.rate_limit_burst, args.rate_key),
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
    local.add_argument("--rate-limit-rps", type=int, default=0, help="requests per second per client; 0: no limit")
    local.add_argument("--rate-limit-burst", type=int, default=DEFAULT_RATE_LIMIT_BURST,
                       help="requests a client may send at once above the rate")
    local.add_argument("--rate-key", choices=["address", "key"], default="address",
                       help="what a client is: its address, or its API key (addresses for requests without one)")
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
