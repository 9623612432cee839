"""ganforge: GAN training as a service. This package is the client side (`ganforge.client`, the command line).

`ganforge.load_generator` (and `ganforge.Generator`) rebuild a trained generator from a checkpoint;
they need PyTorch (`pip install 'ganforge[worker]'`) and are imported on first use, so that
`import ganforge` never imports torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ganforge.generator import Generator, load_generator

__all__ = ["Generator", "load_generator"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from ganforge import generator

        return getattr(generator, name)
    raise AttributeError(f"module 'ganforge' has no attribute {name!r}")
