"""Pictures of ideas a web engineer has not met yet, drawn by the course (no image files).

Placeholder module: each diagram is a function returning a matplotlib Figure.
"""

from __future__ import annotations
