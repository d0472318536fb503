"""The one registry from method name to builder."""

from export.builders import build_maskclip

BUILDERS = {
    "maskclip": build_maskclip,
}
