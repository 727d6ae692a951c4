"""/v1/accounts (admin only) and /v1/tokens (any account mints its own bearer token)."""
from __future__ import annotations

from fastapi import APIRouter, Depends, Response, status

from api.context import Context
from api.deps import admin_account, current_account, get_context
from api.routers.common import V1
from api.routers.v1.models import AccountCreate, AccountList, AccountOut, TokenOut
from api.services import accounts as service
from api.store.models import Account

router = APIRouter(tags=["accounts"])


def render(account: Account) -> AccountOut:
    return AccountOut(id=account.id, name=account.name, role=account.role, created_at=account.created_at)


@router.post("/accounts", response_model=AccountOut, status_code=status.HTTP_201_CREATED,
             responses=V1.responses(403, 409))
def create_account(body: AccountCreate, ctx: Context = Depends(get_context), actor: Account = Depends(admin_account)):
    return render(service.create_account(ctx, actor, body.name, body.password.get_secret_value(), body.role))


@router.get("/accounts", response_model=AccountList, responses=V1.responses(403))
def list_accounts(ctx: Context = Depends(get_context), actor: Account = Depends(admin_account)):
    rows = service.list_accounts(ctx, actor)
    return AccountList(contents=[render(a) for a in rows], count=len(rows))


@router.delete("/accounts/{account_id}", status_code=status.HTTP_204_NO_CONTENT,
               responses=V1.responses(403, 404, 409))
def delete_account(account_id: str, ctx: Context = Depends(get_context), actor: Account = Depends(admin_account)):
    service.delete_account(ctx, actor, account_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/tokens", response_model=TokenOut, status_code=status.HTTP_201_CREATED)
def mint_token(ctx: Context = Depends(get_context), actor: Account = Depends(current_account)):
    return TokenOut(token=service.mint_token(ctx, actor))
