"""Dataset readers, one module per dataset, registered by the name recipes use."""

from pipeline.sources.base import Clip, Frame, Labels, Source
from pipeline.sources.doh100 import DOH100
from pipeline.sources.freihand import FreiHAND
from pipeline.sources.hanco import HanCo
from pipeline.sources.ho3d import HO3D

SOURCES: dict[str, type[Source]] = {"hanco": HanCo, "ho3d": HO3D, "doh100": DOH100, "freihand": FreiHAND}

__all__ = ["SOURCES", "Clip", "Frame", "Labels", "Source"]
