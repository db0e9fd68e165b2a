"""icc inside web frameworks: :mod:`icc.contrib.django` (an app for ``INSTALLED_APPS``) and
:mod:`icc.contrib.flask` (``Icc(app)``). Nothing in icc imports these; each installs itself through
:mod:`icc.framework` in the processes that load it."""
