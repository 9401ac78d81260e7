"""Use cases. Each public function is one transaction and the unit of work."""
