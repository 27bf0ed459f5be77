"""Registry routes, one router per concept (catalogue, applications and grants, import and export)."""

from fastapi import APIRouter

from services.registry.api import applications, catalogue, transfer

router = APIRouter()
router.include_router(catalogue.router)
router.include_router(applications.router)
router.include_router(transfer.router)
