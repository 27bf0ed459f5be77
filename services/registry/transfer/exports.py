"""导出 — the catalogue as CSV (the import template's columns, so that it imports again) and as
DCAT-AP 3.0 JSON-LD, which a CKAN harvester (ckanext-dcat) reads.

DCAT-AP 3.0 (SEMIC, https://semiceu.github.io/DCAT-AP/releases/3.0.0/): a ``dcat:Catalog`` with
``dct:title``, ``dct:description`` and ``dct:publisher``, whose ``dcat:dataset`` are ``dcat:Dataset``
with ``dct:identifier`` (信息资源代码), ``dct:title``, ``dct:description``, ``dct:publisher``,
``dcat:theme`` (a concept of 信息资源分类, itself the catalogue's ``dcat:themeTaxonomy``),
``dct:accrualPeriodicity`` and ``dct:accessRights`` from the EU authority tables, and one
``dcat:distribution`` whose ``dcat:accessService`` is the exchange's query API (a
``dcat:DataService``). A page of the catalogue says where the next is as a
``hydra:PagedCollection``, which ckanext-dcat follows.
"""

from __future__ import annotations

import csv
import io
from typing import Any
from urllib.parse import urlencode

from services.registry.catalogue.classification import TAXONOMY
from services.registry.models import Resource
from services.registry.transfer.columns import COLUMNS, EXPORT_ONLY, Column, format_cell

EU = "http://publications.europa.eu/resource/authority/"
FREQUENCY = {
    "实时": "CONT",
    "每日": "DAILY",
    "每周": "WEEKLY",
    "每月": "MONTHLY",
    "每季度": "QUARTERLY",
    "每半年": "ANNUAL_2",
    "每年": "ANNUAL",
    "其他": "OTHER",
}
CONTEXT = {
    "dcat": "http://www.w3.org/ns/dcat#",
    "dct": "http://purl.org/dc/terms/",
    "foaf": "http://xmlns.com/foaf/0.1/",
    "skos": "http://www.w3.org/2004/02/skos/core#",
    "owl": "http://www.w3.org/2002/07/owl#",
    "xsd": "http://www.w3.org/2001/XMLSchema#",
    "hydra": "http://www.w3.org/ns/hydra/core#",
}


def value_of(resource: Resource, column: Column) -> Any:
    head, _, tail = column.field.partition(".")
    value = getattr(resource, head)
    return value.get(tail) if tail else value


def csv_export(resources: list[Resource]) -> str:
    """The entries as CSV with the template's headers (and code, provider, status, version and
    publication date first), UTF-8 with a BOM so that Excel opens the Chinese right."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow([*EXPORT_ONLY, *(c.label for c in COLUMNS)])
    for r in resources:
        known = [
            r.code,
            r.provider_dept,
            r.status,
            str(r.version),
            r.published_on.isoformat() if r.published_on else "",
        ]
        writer.writerow([*known, *(format_cell(c, value_of(r, c)) for c in COLUMNS)])
    return "\ufeff" + out.getvalue()


def zh(text: str) -> dict[str, str]:
    return {"@value": text, "@language": "zh"}


def access_rights(resource: Resource) -> str:
    """PUBLIC when open to society (开放), NON_PUBLIC when 不予共享, else RESTRICTED (shared
    between departments, conditionally or not, but not with the public)."""
    if resource.open.get("public"):
        return "PUBLIC"
    return "NON_PUBLIC" if resource.share["type"] == "none" else "RESTRICTED"


def dataset(resource: Resource, base: str) -> dict[str, Any]:
    identifier = f"{base}/v1/registry/resources/{resource.code}"
    target = resource.category[:6]
    service = f"{base}/v1/exchange/queries"
    node: dict[str, Any] = {
        "@id": identifier,
        "@type": "dcat:Dataset",
        "dct:identifier": resource.code,
        "dct:title": zh(resource.name),
        "dct:description": zh(resource.summary),
        "dct:publisher": {
            "@id": f"{base}/v1/departments/{resource.provider_dept}",
            "@type": "foaf:Agent",
            "foaf:name": resource.provider_dept,
            "dct:identifier": resource.provider_dept,  # 统一社会信用代码
        },
        "dcat:theme": {
            "@id": f"{base}/v1/registry/classification#{target}",
            "@type": "skos:Concept",
            "skos:notation": target,
            "skos:prefLabel": zh(TAXONOMY.targets.get(target, target)),
            "skos:inScheme": {"@id": f"{base}/v1/registry/classification"},
        },
        "dcat:keyword": [zh(item["name"]) for item in resource.items],
        "dct:accrualPeriodicity": {"@id": EU + "frequency/" + FREQUENCY.get(resource.update_cycle, "UNKNOWN")},
        "dct:accessRights": {"@id": EU + "access-right/" + access_rights(resource)},
        "owl:versionInfo": str(resource.version),
        "dcat:distribution": [
            {
                "@id": f"{identifier}#distribution",
                "@type": "dcat:Distribution",
                "dct:title": zh(f"{resource.name}（{resource.share.get('mode', '接口')}）"),
                "dcat:accessURL": {"@id": service},
                "dcat:accessService": {
                    "@id": service,
                    "@type": "dcat:DataService",
                    "dct:title": zh("通办数据共享交换接口"),
                    "dcat:endpointURL": {"@id": service},
                },
            }
        ],
    }
    if resource.published_on is not None:
        node["dct:issued"] = {"@value": resource.published_on.isoformat(), "@type": "xsd:date"}
    return node


def dcat_catalog(
    resources: list[Resource], base: str, page_url: str, query: dict[str, str], next_cursor: str | None
) -> dict[str, Any]:
    """One page of the published catalogue as DCAT-AP 3.0 JSON-LD; ``query`` is this page's query
    string without its cursor, ``page_url`` its URL without a query."""
    catalog: dict[str, Any] = {
        "@id": f"{base}/v1/registry/exports/dcat",
        "@type": "dcat:Catalog",
        "dct:title": zh("政务信息资源目录"),
        "dct:description": zh("通办平台已发布的政务信息资源（依据《政务信息资源目录编制指南（试行）》编目）。"),
        "dct:publisher": {"@id": f"{base}/", "@type": "foaf:Agent", "foaf:name": "通办平台 (Tongban)"},
        "dcat:themeTaxonomy": {
            "@id": f"{base}/v1/registry/classification",
            "@type": "skos:ConceptScheme",
            "dct:title": zh(TAXONOMY.source),
        },
        "dcat:dataset": [dataset(r, base) for r in resources],
    }
    this = f"{page_url}?{urlencode(query)}" if query else page_url
    paging: dict[str, Any] = {
        "@id": this,
        "@type": "hydra:PagedCollection",
        "hydra:itemsPerPage": len(resources),
    }
    if next_cursor is not None:
        paging["hydra:nextPage"] = f"{page_url}?{urlencode({**query, 'cursor': next_cursor})}"
    return {"@context": CONTEXT, "@graph": [catalog, paging]}
