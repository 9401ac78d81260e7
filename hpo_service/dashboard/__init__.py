"""The web dashboard at ``/ui/``: server-rendered pages, vendored charts, no CDN."""
