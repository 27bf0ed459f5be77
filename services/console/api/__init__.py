"""The console's pages, one router per kind of person's work (as the registry's routes are):
``common`` holds what they share — the session, CSRF, rendering, calling the platform's API."""

from fastapi import APIRouter

from services.console.api import account, approvals, audit, catalogue

router = APIRouter()
router.include_router(account.router)
router.include_router(catalogue.router)
router.include_router(approvals.router)
router.include_router(audit.router)
