from django.apps import AppConfig


class RoutingConfig(AppConfig):
    name = "routing"

    def ready(self) -> None:
        # Connects the signals that drop compiled policies when a policy, cell, cluster or price
        # changes, in every process (a light import: the router itself loads on first compile).
        from . import cache  # noqa: F401
