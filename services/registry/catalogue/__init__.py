"""The catalogue (政务信息资源目录): entries, their codes, classification and lifecycle."""
