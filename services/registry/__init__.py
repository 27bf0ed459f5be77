"""Registry — 资源目录: the catalogue, applications and grants."""
