"""FastAPI dependencies: the service context and the authenticated account."""
from __future__ import annotations

import base64
import binascii

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBasic, HTTPBearer

from api.context import Context
from api.services import accounts
from api.store.models import Account

# auto_error=False: one dependency answers 401 for both schemes; both show in the OpenAPI page.
_basic = HTTPBasic(auto_error=False)
_bearer = HTTPBearer(auto_error=False)


def get_context(request: Request) -> Context:
    return request.app.state.context


def current_account(request: Request, ctx: Context = Depends(get_context),
                    _b=Depends(_basic), bearer: HTTPAuthorizationCredentials | None = Depends(_bearer)) -> Account:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    account = None
    if scheme.lower() == "bearer" and value:
        account = accounts.authenticate_token(ctx, value.strip())
    elif scheme.lower() == "basic" and value:
        try:
            name, _, password = base64.b64decode(value.strip()).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            name = password = ""
        if name:
            account = accounts.authenticate_basic(ctx, name, password)
    if account is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "authentication required",
                            headers={"WWW-Authenticate": 'Basic realm="pgdbaas", Bearer'})
    return account


def admin_account(account: Account = Depends(current_account)) -> Account:
    accounts.require_admin(account)
    return account
