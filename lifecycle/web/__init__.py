"""The web: public pages, pages behind email links, the coordinator console, the JSON API."""
