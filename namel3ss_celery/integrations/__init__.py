"""Integrations with the frameworks users dispatch from: ``flask`` (``Namel3ssFlask``) and ``django``
(``dispatch_on_commit``). Each module imports its framework, so import the one you use."""
