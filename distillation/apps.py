from django.apps import AppConfig


class DistillationConfig(AppConfig):
    name = "distillation"
