"""kdsam-annotate: a standalone PyQt5 click-to-mask annotator built on ``kdsam_core``.

Modules: ``app`` (command line), ``window`` (main window, view), ``files`` (open, save,
autosave, quit), ``annotate`` (click-to-mask workflow), ``canvas`` (slice view and mouse),
``session`` (annotation state and undo, no Qt), ``autosave`` (recovery files), ``worker``
(model thread), ``display`` (pixels), ``actions`` (menus, shortcuts, help).
"""
