"""Request and response bodies (names end in Create/Read/Update/Page)."""
