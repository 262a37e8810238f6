"""Readers of the published data set layouts beyond class folders (registered in ``layouts.LAYOUTS``)."""

from __future__ import annotations
