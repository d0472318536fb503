"""The one registry from method name to builder."""

from export.builders import build_cliprc, build_maskclip, build_maskclip_plus, build_zegclip

BUILDERS = {
    "maskclip": build_maskclip,
    "maskclip_plus": build_maskclip_plus,
    "zegclip": build_zegclip,
    "cliprc": build_cliprc,
}
