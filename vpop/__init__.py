"""Virtual populations, digital twins and virtual trials (`qsp.vpop`)."""
