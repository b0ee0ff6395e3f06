"""`imgserve keys` and `imgserve tenants`: manage API keys and tenants directly in the job database.

The database (IMGSERVE_DATABASE_URL, default the SQLite file under IMGSERVE_CACHE_DIR) is the root of trust:
whoever can write it can make keys, so these commands need no key themselves. Every change is audited
(client "cli").
"""

import argparse
import json
import math
import re
import sys
from typing import Any


def _engine() -> Any:
    from serving.jobs.database import open_job_database  # here: `imgserve classify` need not import alembic

    return open_job_database()


def _audit(engine: Any, action: str, target: str, tenant: str, detail: dict[str, Any] | None = None) -> None:
    from serving.security.audit import AuditEntry, write_entry

    with engine.begin() as conn:
        write_entry(conn, AuditEntry(action=action, client="cli", tenant=tenant, target=target, detail=detail))


MAX_COUNT = 2**62  # quotas and bursts are stored as BIGINT


def _rate(text: str) -> float:
    """`5`, `5/s`, `300/min`, `1000/h` -> requests per second."""
    from serving.security.settings import requests_per_second

    try:
        rate = requests_per_second(text)
    except ValueError:
        rate = math.nan
    if not math.isfinite(rate) or rate <= 0:
        raise argparse.ArgumentTypeError(f"rate must look like 5, 5/s, 300/min or 1000/h (> 0), got {text!r}")
    return rate


def _quota(text: str) -> int:
    """`10000` or `10000/day`: images per UTC day (another period was stored as per day without a word)."""
    value, _, unit = text.partition("/")
    try:
        quota = int(value)
    except ValueError:
        quota = -1
    if unit.strip().lower() not in ("", "d", "day") or not 0 <= quota <= MAX_COUNT:
        raise argparse.ArgumentTypeError(f"quota is images per UTC day, like 10000 or 10000/day, got {text!r}")
    return quota


def _count(text: str) -> int:
    """A whole number >= 0 (a negative burst made the key unlimited, a negative quota meant nothing)."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= MAX_COUNT:  # the database's BIGINT (99999999999999999999 was an OverflowError)
        raise argparse.ArgumentTypeError(f"expected a whole number from 0 to {MAX_COUNT}, got {text!r}")
    return value


def _cmd_keys_create(args: argparse.Namespace) -> int:
    from serving.security.keys import KeyStore

    engine = _engine()
    try:
        record, key = KeyStore(engine).create(args.name, args.role, args.tenant, args.rate, args.burst, args.quota)
    except ValueError as exc:
        print(f"imgserve: error: {exc}", file=sys.stderr)
        return 2
    _audit(engine, "key.create", record.id, record.tenant, {"role": record.role, "name": record.name})
    limits = f"rate {record.rate_per_s:g}/s burst {record.burst}" if record.rate_per_s else "no rate limit"
    quota = f"quota {record.quota_images_per_day} images/day" if record.quota_images_per_day is not None else "no quota"
    quota += " (none allowed: the key is frozen)" if record.quota_images_per_day == 0 else ""
    print(f"created key {record.id} ({record.name}): tenant {record.tenant}, role {record.role}, {limits}, {quota}")
    print("the key is shown once; store it now (clients send it as 'Authorization: Bearer <key>'):")
    print(key)
    return 0


def _cmd_keys_list(args: argparse.Namespace) -> int:
    from serving.security.keys import KeyStore

    records = KeyStore(_engine()).list(args.tenant, args.all)
    if args.json:
        print(json.dumps([r.public() for r in records], indent=2))
        return 0
    if not records:  # said on stderr: a script reading the table still gets no lines
        which = f"tenant {args.tenant!r}" if args.tenant else "any tenant"
        print(f"no {'' if args.all else 'active '}keys for {which} ('imgserve keys create' makes one)", file=sys.stderr)
    for r in records:
        state = "revoked" if r.revoked_at else "active"
        rate = f"{r.rate_per_s:g}/s" if r.rate_per_s else "-"
        quota = str(r.quota_images_per_day) if r.quota_images_per_day is not None else "-"
        print(f"{r.id}  {state:7}  {r.tenant:16} {r.role:9} rate {rate:8} quota {quota:10} {r.name}")
    return 0


KEY_ID_IN = re.compile(r"^(?:isk_)?([0-9a-f]{12})(?:_|$)")


def _key_id(text: str) -> str:
    """The key id in what `keys revoke` is given: the id `keys list` shows, or the whole key (a leaked key is what
    one has at hand: it was looked up as an id, not found, and printed back, secret and all, in the error)."""
    match = KEY_ID_IN.match(text.strip())
    return match.group(1) if match else text


def _cmd_keys_revoke(args: argparse.Namespace) -> int:
    from serving.security.keys import KeyStore

    engine = _engine()
    key_id = _key_id(args.key_id)
    try:
        record = KeyStore(engine).revoke(key_id)
    except KeyError:
        shown = key_id if len(key_id) <= 16 else key_id[:16] + "..."  # never the rest of a mistyped key
        print(f"imgserve: error: no key with id {shown!r}", file=sys.stderr)
        return 1
    _audit(engine, "key.revoke", record.id, record.tenant)
    print(f"revoked key {record.id} ({record.name}); replicas stop accepting it within IMGSERVE_KEY_CACHE_S (5 s)")
    return 0


def _tenant_known(engine: Any, tenant: str) -> bool:
    """Whether `tenant` exists: the default tenant (every caller's on a server without tenants), or a tenant something
    made: its settings row (`keys create`, `tenants set --create`, a webhook delivery's secret), or its jobs,
    collections or training jobs (a JWT caller's tenant has no key)."""
    import sqlalchemy as sa

    from serving.jobs.tables import collections, jobs, training_jobs
    from serving.security.principal import DEFAULT_TENANT
    from serving.security.tables import api_keys, tenants

    if tenant == DEFAULT_TENANT:
        return True
    columns = (tenants.c.id, api_keys.c.tenant, jobs.c.tenant, collections.c.tenant, training_jobs.c.tenant)
    with engine.connect() as conn:
        return any(
            conn.execute(sa.select(sa.literal(1)).where(column == tenant).limit(1)).first() for column in columns
        )


def _unknown_tenant(tenant: str) -> int:
    """A mistyped tenant name made a new tenant (a webhook secret the real tenant never signs with, a quota on no
    one): refused, one line, exit 2."""
    print(
        f"imgserve: error: unknown tenant {tenant!r} (no keys, jobs, collections, training jobs or settings);"
        f" check the name, or set it up with 'imgserve tenants set {tenant} --create'",
        file=sys.stderr,
    )
    return 2


def _cmd_tenants_set(args: argparse.Namespace) -> int:
    from serving.security.tenants import TenantStore

    engine = _engine()
    known = _tenant_known(engine, args.tenant)
    if not known and not args.create:
        return _unknown_tenant(args.tenant)
    try:
        policy = TenantStore(engine).update(
            args.tenant, args.anonymize, args.quota_images, args.quota_bytes, clear_quotas=args.clear_quotas
        )
    except ValueError as exc:
        print(f"imgserve: error: {exc}", file=sys.stderr)
        return 2
    _audit(engine, "tenant.update", policy.id, policy.id, policy.__dict__)
    if not known:
        print(f"created tenant {policy.id}", file=sys.stderr)
    print(json.dumps(policy.__dict__))
    return 0


def _cmd_tenants_list(args: argparse.Namespace) -> int:
    from serving.security.tenants import TenantStore

    print(json.dumps(TenantStore(_engine()).list(), indent=2))
    return 0


def _cmd_tenants_secret(args: argparse.Namespace) -> int:
    from serving.security.tenants import ROTATION_GRACE_S, TenantStore

    engine = _engine()
    if not _tenant_known(engine, args.tenant):
        return _unknown_tenant(args.tenant)
    secret = TenantStore(engine).webhook_secret(args.tenant, rotate=args.rotate, create=False)
    if secret is None:  # a read makes none: it would replace IMGSERVE_WEBHOOK_SECRET as the signing key at once
        print(
            f"imgserve: tenant {args.tenant} has no webhook secret of its own: its deliveries are signed with the"
            " server's IMGSERVE_WEBHOOK_SECRET where that is set, else with a secret made at its first delivery"
            " (shown here then). `--rotate` makes one now; where the server's secret signed, receivers must switch"
            " to it at once",
            file=sys.stderr,
        )
        return 1
    _audit(engine, "tenant.webhook_secret" + (".rotate" if args.rotate else ".read"), args.tenant, args.tenant)
    print(f"webhook signing secret of tenant {args.tenant} (verify X-Imgserve-Signature with it):")
    print(secret.decode())
    if args.rotate:
        hours = ROTATION_GRACE_S / 3600
        print(
            f"for the next {hours:g} h deliveries carry a signature with this secret and one with the replaced one:"
            " switch your receiver to this secret within that time",
            file=sys.stderr,
        )
    return 0


def _cmd_tenants_erase(args: argparse.Namespace) -> int:
    if not args.yes:
        print(
            f"imgserve: error: this deletes every job, collection, training job, trained model version, key and"
            f" usage count of tenant {args.tenant!r} for good; run it again with --yes",
            file=sys.stderr,
        )
        return 2
    from serving.config.settings import ServerSettings
    from serving.jobs.objects import ObjectStore, ObjectStoreUnusableError
    from serving.jobs.settings import JobSettings
    from serving.jobs.tenant_erasure import erase_tenant
    from serving.security.audit import AuditEntry

    engine = _engine()
    try:
        objects = ObjectStore(JobSettings.from_env().object_store)
    except (ValueError, ObjectStoreUnusableError) as exc:  # a bad IMGSERVE_OBJECT_STORE, a missing bucket
        print(f"imgserve: error: {exc}", file=sys.stderr)
        return 2
    trained_models = ServerSettings.from_env().trained_models
    entry = AuditEntry(action="tenant.erase", client="cli")
    report = erase_tenant(engine, objects, trained_models, args.tenant, entry, erase_audit=args.audit)
    print(json.dumps(report.__dict__))
    if report.model_folders_removed:
        print(
            f"removed model folders under {trained_models}: replicas stop serving them within IMGSERVE_MODEL_POLL_S",
            file=sys.stderr,
        )
    return 0


def add_security_commands(sub: Any) -> None:
    keys = sub.add_parser("keys", help="API keys (create, list, revoke) in the job database")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    create = keys_sub.add_parser("create", help="a new key; printed once, as the last line")
    create.add_argument("--name", required=True, help="who or what the key is for")
    create.add_argument("--role", required=True, choices=("viewer", "analyst", "operator", "admin"))
    create.add_argument("--tenant", required=True, help="the tenant whose jobs the key reads and makes")
    create.add_argument("--rate", type=_rate, default=None, help="request rate limit: 5, 5/s, 300/min (default none)")
    create.add_argument("--burst", type=_count, default=None, help="requests allowed at once (default: 1 s of --rate)")
    create.add_argument(
        "--quota",
        type=_quota,
        default=None,
        help="images per UTC day, e.g. 10000/day; 0 freezes the key (default none)",
    )
    create.set_defaults(func=_cmd_keys_create)
    listing = keys_sub.add_parser("list", help="keys (never the secrets)")
    listing.add_argument("--tenant", default=None)
    listing.add_argument("--all", action="store_true", help="include revoked keys")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=_cmd_keys_list)
    revoke = keys_sub.add_parser("revoke", help="stop a key working (within IMGSERVE_KEY_CACHE_S seconds)")
    revoke.add_argument("key_id", help="the key's id (isk_<id>_...), as `keys list` shows it, or the whole key")
    revoke.set_defaults(func=_cmd_keys_revoke)

    tenants = sub.add_parser("tenants", help="tenants' quotas, forced anonymisation, webhook secrets")
    tenants_sub = tenants.add_subparsers(dest="tenants_command", required=True)
    update = tenants_sub.add_parser("set", help="change a tenant's settings (--create: set up a new tenant)")
    update.add_argument("tenant")
    update.add_argument("--create", action="store_true", help="the tenant is new (else an unknown name is refused)")
    update.add_argument("--anonymize", action=argparse.BooleanOptionalAction, default=None, help="force anonymize")
    update.add_argument(
        "--quota-images", type=_quota, default=None, help="images per UTC day for the tenant (0: none, frozen)"
    )
    update.add_argument(
        "--quota-bytes", type=_count, default=None, help="bytes of batch inputs the tenant may store (0: none)"
    )
    update.add_argument("--clear-quotas", action="store_true", help="remove both quotas")
    update.set_defaults(func=_cmd_tenants_set)
    tenants_sub.add_parser("list", help="tenants and their settings").set_defaults(func=_cmd_tenants_list)
    secret = tenants_sub.add_parser(
        "webhook-secret",
        help="print a tenant's own webhook signing secret (exit 1 if it has none); --rotate makes or replaces it",
    )
    secret.add_argument("tenant")
    secret.add_argument("--rotate", action="store_true")
    secret.set_defaults(func=_cmd_tenants_secret)
    erase = tenants_sub.add_parser(
        "erase", help="delete everything stored for a tenant: jobs, collections, training, trained models, keys"
    )
    erase.add_argument("tenant")
    erase.add_argument("--yes", action="store_true", help="really erase (nothing is deleted without it)")
    erase.add_argument("--audit", action="store_true", help="delete the tenant's audit entries too")
    erase.set_defaults(func=_cmd_tenants_erase)
