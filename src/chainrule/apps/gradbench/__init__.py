"""chainrule as a gradbench tool: ``python -m chainrule.apps.gradbench`` speaks the gradbench
protocol (JSON lines on stdin/stdout) and answers each eval with chainrule's own transforms.

Each eval has a module here (``hello``, ``llsq``, ``lse``, ``det``, ``ode``, ...) exposing
``FUNCTIONS``: the eval's function names mapped to how to prepare the JSON input, what to run
(timed), and how to write the result back as JSON. ``protocol`` holds the message loop.
"""
