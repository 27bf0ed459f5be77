"""Registry routes, one router per concept (catalogue, applications and grants)."""

from fastapi import APIRouter

from services.registry.api import applications, catalogue

router = APIRouter()
router.include_router(catalogue.router)
router.include_router(applications.router)
