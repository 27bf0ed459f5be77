"""Gateway — the only public entry: identity (departments, systems, people), OAuth2 tokens, routing."""
