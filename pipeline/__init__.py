"""handclr: self-supervised pre-training of 3D hand-pose encoders on sharded video."""

__version__ = "0.1.0"
