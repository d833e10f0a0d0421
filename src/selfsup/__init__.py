"""selfsup: self-supervision for computer vision and chemistry.

Vision: SLA, AugSelf, SelfPatch, two-view SSL, rotation and masked-image pretext tasks.
Chemistry: GEGL molecular optimisation and self-improved Retro* retrosynthesis planning.
"""

__version__ = "0.1.0"
