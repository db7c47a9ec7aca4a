"""dicesearch: search diffusion-model backbones from declarative specs."""

__version__ = "0.1.0"
