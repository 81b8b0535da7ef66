"""Synthetic faces, the package's default data: a procedural face generator (`generator`) and its `datasets`
builder (`builder.SynthFaces`, registered as "synthfaces")."""

from .builder import AU_IDS, SynthFaces, SynthFacesConfig

__all__ = ["AU_IDS", "SynthFaces", "SynthFacesConfig"]
