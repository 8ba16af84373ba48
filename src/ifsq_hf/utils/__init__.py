"""Small helpers with no dependency beyond the core (torch, numpy, pillow): optional-import checks, JSON files and
image grids. Every layer may import them."""
