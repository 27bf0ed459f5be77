"""The console's pages, one router per kind of person's work (as the registry's routes are):
``common`` holds what they share — the session, CSRF, rendering, calling the platform's API."""

from fastapi import APIRouter

from services.console.api import account, admin, applying, approvals, audit, catalogue, lists, service_items

router = APIRouter()
router.include_router(account.router)
router.include_router(catalogue.router)
router.include_router(approvals.router)
router.include_router(applying.router)
router.include_router(lists.router)
router.include_router(service_items.router)
router.include_router(admin.router)
router.include_router(audit.router)
