"""批量导入导出 — bulk import (.xlsx, .csv) and export (CSV, JSON, DCAT-AP JSON-LD) of the catalogue."""
