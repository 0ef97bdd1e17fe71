"""directalign: direct preference alignment of language models (DPO and its family)."""

__version__ = "0.1.0"
