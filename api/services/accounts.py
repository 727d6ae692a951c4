"""API accounts (admin | user), their bearer tokens, and authentication."""
from __future__ import annotations

import hashlib
import re
import threading

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from api.context import Context
from api.errors import Conflict, Forbidden, Invalid, NotFound
from api.security import hash_password, new_token, token_digest, verify_password
from api.store.models import Account, Cluster, Project, Token

ROLES = ("admin", "user")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{1,63}$")

# scrypt is deliberately slow; remember successful Basic logins (keyed by a hash of the
# password, never the password) so polling clients do not pay it on every request.
_verified: dict[tuple[str, str], str] = {}
_verified_lock = threading.Lock()
_verifying = [threading.Lock() for _ in range(64)]  # striped: bounded whatever is tried


def _key_lock(key: tuple[str, str]) -> threading.Lock:
    return _verifying[hash(key) % len(_verifying)]


def ensure_admin(ctx: Context) -> None:
    settings = ctx.settings
    if not settings.admin_password:
        return
    with ctx.sessions.begin() as session:
        if session.scalar(select(Account).where(Account.name == settings.admin_user)) is None:
            session.add(Account(name=settings.admin_user, role="admin",
                                password_hash=hash_password(settings.admin_password)))


def authenticate_basic(ctx: Context, name: str, password: str) -> Account | None:
    key = (name, hashlib.sha256(password.encode()).hexdigest())
    with ctx.sessions() as session:
        account = session.scalar(select(Account).where(Account.name == name))
        if account is None:
            return None
        with _verified_lock:
            cached = _verified.get(key)
        if cached == account.password_hash:
            return account
        # One scrypt per (name, password) at a time: concurrent first calls wait for it.
        with _key_lock(key):
            with _verified_lock:
                if _verified.get(key) == account.password_hash:
                    return account
            if not verify_password(password, account.password_hash):
                return None
            with _verified_lock:
                _verified[key] = account.password_hash
        return account


def authenticate_token(ctx: Context, token: str) -> Account | None:
    with ctx.sessions() as session:
        row = session.get(Token, token_digest(token))
        return session.get(Account, row.account_id) if row else None


def require_admin(actor: Account) -> None:
    if actor.role != "admin":
        raise Forbidden("this endpoint is for admin accounts")


def create_account(ctx: Context, actor: Account, name: str, password: str, role: str) -> Account:
    require_admin(actor)
    if not NAME_RE.match(name):
        raise Invalid("name must be 2-64 characters: letters, digits, _ . @ -", field="name")
    if role not in ROLES:
        raise Invalid(f"role must be one of {', '.join(ROLES)}", field="role")
    if len(password) < 8:
        raise Invalid("password must be at least 8 characters", field="password")
    try:
        with ctx.sessions.begin() as session:
            account = Account(name=name, role=role, password_hash=hash_password(password))
            session.add(account)
    except IntegrityError as exc:
        raise Conflict(f"account {name!r} already exists", field="name") from exc
    return account


def list_accounts(ctx: Context, actor: Account) -> list[Account]:
    require_admin(actor)
    with ctx.sessions() as session:
        return list(session.scalars(select(Account).order_by(Account.name)))


def delete_account(ctx: Context, actor: Account, account_id: str) -> None:
    require_admin(actor)
    if account_id == actor.id:
        raise Conflict("an admin cannot delete its own account")
    with ctx.sessions.begin() as session:
        account = session.get(Account, account_id)
        if account is None:
            raise NotFound(f"account {account_id} not found")
        if session.scalar(select(Cluster.id).where(Cluster.owner_id == account_id,
                                                   Cluster.service_state != "TERMINATED").limit(1)):
            raise Conflict("the account still owns clusters: terminate them first")
        session.execute(delete(Token).where(Token.account_id == account_id))
        # Its projects go with it (their databases went with its clusters).
        session.execute(delete(Project).where(Project.owner_id == account_id))
        session.delete(account)


def mint_token(ctx: Context, actor: Account) -> str:
    token = new_token()
    with ctx.sessions.begin() as session:
        session.add(Token(digest=token_digest(token), account_id=actor.id))
    return token
