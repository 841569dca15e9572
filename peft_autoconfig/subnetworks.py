"""The one switching rule both weight-sharing super-networks share (the backbone's `SuperNetwork`, the super-PET's
`SuperPet`): `select(sub)` makes a sub-network active in place, `use(sub)` runs a block with it and restores the
previous one, even when the block raises (an evaluation in the middle of training must not leave a slice active)."""

from __future__ import annotations

import contextlib
from typing import Any, Iterator


class InPlaceSwitch:
    """Mixin: subclasses set `self.active` and implement `select(sub)`; `use(sub)` comes from here."""

    active: Any = None

    def select(self, sub: Any) -> None:
        raise NotImplementedError

    @contextlib.contextmanager
    def use(self, sub: Any) -> Iterator[None]:
        """Run `sub` inside the block, then go back to the previously active sub-network."""
        previous = self.active
        self.select(sub)
        try:
            yield
        finally:
            self.select(previous)
