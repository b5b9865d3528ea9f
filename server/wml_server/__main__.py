"""`python -m wml_server` (or `wml-server`): serve the API, or manage users.

  wml-server serve [settings]                     run the service (the default command)
  wml-server add-user USERNAME --instance-id ID   add or update a user (password from stdin or prompt)
  wml-server delete-user USERNAME
  wml-server list-users
  wml-server publish FILE --name NAME ...         publish a model through a running service's API
  wml-server generate-key --key-file PATH         make the key file that encrypts stored credentials
  wml-server rotate-key [--drop-old] [settings]   re-encrypt every stored credential under a new key
"""

from __future__ import annotations

import argparse
import getpass
import logging
import sys
import uuid

from wml_server import publish as publish_mod
from wml_server import settings as settings_mod
from wml_server.audit import CLI, AuditLog, AuditTrailError, os_user
from wml_server.tls import CertReloader
from wml_server.vault import KeyFileError

STARTUP_FAILURE = 3  # uvicorn.run's exit code when the server did not start


def _serve(s: settings_mod.Settings) -> int:
    problem = s.exposure_problem()
    if problem:
        raise SystemExit(f"error: {problem}")
    import uvicorn

    from wml_server.app import create_app

    logging.basicConfig(level=s.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if s.tls_cert is None and not settings_mod.is_loopback(s.host):
        logging.getLogger("wml_server").warning(
            "serving plain HTTP on %s (%s=true): logins and tokens cross the network unencrypted", s.host,
            settings_mod.env_var("plain_http"))
    app = create_app(s)
    # proxy_headers off: uvicorn's default believes X-Forwarded-For from 127.0.0.1, so any local client could
    # pick the address the token rate limit counts by. --trusted-proxies turns it on in create_app.
    config = uvicorn.Config(app, host=s.host, port=s.port, log_level=s.log_level, proxy_headers=False,
                            ssl_certfile=str(s.tls_cert) if s.tls_cert else None,
                            ssl_keyfile=str(s.tls_key) if s.tls_key else None)
    config.load()  # makes the SSLContext now, so a renewed certificate can be loaded into it (wml_server.tls)
    reloader = CertReloader(config.ssl, s.tls_cert, s.tls_key, s.tls_reload_seconds).start() \
        if config.ssl and s.tls_cert and s.tls_key else None
    server = uvicorn.Server(config)
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        if reloader:
            reloader.stop()
    # As uvicorn.run: a server that never started (the port taken) is a failed start, exit code 3.
    return 0 if server.started else STARTUP_FAILURE


def _read_password(from_stdin: bool) -> str:
    if from_stdin or not sys.stdin.isatty():
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass("password: ")
    if len(password) < 8:
        raise SystemExit("error: the password must have at least 8 characters")
    return password


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except (KeyFileError, AuditTrailError) as exc:  # names the setting (and what to run); never a key
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _keys(args: argparse.Namespace, s: settings_mod.Settings) -> int:
    from wml_server import atrest, vault

    if s.key_file is None:
        raise KeyFileError(f"{args.command} needs {vault.KEY_FILE_SETTING}")
    if args.command == "generate-key":
        vault.write_key_file(s.key_file, [vault.new_key()], replace=False)
        print(f"wrote a new key to {s.key_file} (0600); keep it apart from the data folder, and back it up: "
              "without it the stored credentials cannot be read")
        return 0
    count = atrest.rotate(s.key_file, s.database, new=not args.keep_file and not args.drop_old,
                          drop_old=args.drop_old)
    done = "kept only the first key" if args.drop_old else "the first key now encrypts"
    print(f"re-encrypted {count} stored credential(s) under the first key of {s.key_file}; {done}")
    return 0


def _main(argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(prog="wml-server", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command")
    serve = sub.add_parser("serve", help="run the service")
    settings_mod.add_arguments(serve)
    add = sub.add_parser("add-user", help="add or update a user bound to one instance")
    add.add_argument("username")
    add.add_argument("--instance-id", required=True, help="the instance (a UUID) this user's tokens open")
    add.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    settings_mod.add_arguments(add)
    delete = sub.add_parser("delete-user", help="remove a user (its tokens stop working at once)")
    delete.add_argument("username")
    settings_mod.add_arguments(delete)
    users = sub.add_parser("list-users", help="list users and their instances")
    settings_mod.add_arguments(users)
    publish = sub.add_parser("publish", help="publish a model file through a running service's repository API; "
                                             "prints its id")
    publish_mod.add_arguments(publish)
    generate = sub.add_parser("generate-key", help="write a new key file (0600; an existing file is refused)")
    settings_mod.add_arguments(generate)
    rotate = sub.add_parser("rotate-key", help="add a new first key to the key file and re-encrypt every stored "
                                               "credential under it; the service may keep running")
    how = rotate.add_mutually_exclusive_group()
    how.add_argument("--drop-old", action="store_true",
                     help="re-encrypt under the first key, then remove every other key from the file")
    how.add_argument("--keep-file", action="store_true",
                     help="do not write the key file (a read-only Secret mount: put the new key first in the "
                          "Secret, wait for the mount to show it), only re-encrypt under its first key")
    settings_mod.add_arguments(rotate)

    args = parser.parse_args(argv if argv is not None else (sys.argv[1:] or ["serve"]))
    if args.command == "publish":
        return publish_mod.run(args)
    s = settings_mod.from_namespace(args)
    if args.command == "serve":
        return _serve(s)
    if args.command in ("generate-key", "rotate-key"):
        return _keys(args, s)

    return _users(args, s)


def _users(args: argparse.Namespace, s: settings_mod.Settings) -> int:
    from wml_server.auth import hash_password
    from wml_server.db import Database

    db = Database(s.database)
    # Only the commands that change something open the trail: list-users needs no write access to it.
    audit = AuditLog(s.audit_target) if args.command in ("add-user", "delete-user") else None
    try:
        if args.command == "add-user":
            try:
                instance = str(uuid.UUID(args.instance_id))
            except ValueError:
                raise SystemExit(f"error: --instance-id must be a UUID, got {args.instance_id!r}") from None
            replaced = db.user(args.username)
            db.upsert_user(args.username, hash_password(_read_password(args.password_stdin)), instance)
            # An existing user's new password or instance is a change of its own for whoever audits.
            _audit(audit, "user.added", args.username, instance, "updated" if replaced else "new")
            print(f"user {args.username} can now get tokens for instance {instance}")
        elif args.command == "delete-user":
            gone = db.user(args.username)
            if gone is None or not db.delete_user(args.username):
                print(f"error: no user {args.username}", file=sys.stderr)
                return 1
            _audit(audit, "user.removed", args.username, gone.instance_id, None)
        else:
            for user in db.users():
                print(f"{user.username}\t{user.instance_id}")
    finally:
        db.close()
        if audit is not None:
            audit.close()
    return 0


def _audit(audit: AuditLog | None, event: str, username: str, instance: str, reason: str | None) -> None:
    """`user` is who ran the command (the local account: whoever can write the data folder), `username` the
    account added or removed."""
    if audit is not None:
        audit.record(event, user=os_user(), username=username, instance=instance, client=CLI, outcome="ok",
                     reason=reason)


if __name__ == "__main__":
    sys.exit(main())
