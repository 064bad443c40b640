"""KD SAM for 3D Slicer: the module's Qt-free parts.

``coords`` (RAS <-> IJK <-> array index <-> SAM (x, y), one function each), ``logic``
(:class:`KDSAMLogic`, the one module that touches MRML and numpy together), ``jobs``
(background threads and the training subprocess, polled by the widget's QTimer),
``retrain`` (training command lines, exported training data, results) and ``deps``
(finding ``kdsam_core`` and the Python packages it needs).

Nothing here imports ``qt``, ``ctk`` or ``slicer.ScriptedLoadableModule``, so it runs under
PyPI ``slicer-core`` in a plain virtual environment (``tests/test_slicer_logic.py``).
"""
