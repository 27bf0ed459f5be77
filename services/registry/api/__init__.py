"""Registry routes, one router per concept (catalogue, applications and grants, the three lists,
service items and the figures, import and export)."""

from fastapi import APIRouter

from services.registry.api import applications, catalogue, lists, service_items, transfer

router = APIRouter()
router.include_router(catalogue.router)
router.include_router(applications.router)
router.include_router(lists.router)
router.include_router(service_items.router)
router.include_router(transfer.router)
