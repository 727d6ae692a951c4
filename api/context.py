"""What every service call needs, built once at start-up (api.main)."""
from __future__ import annotations

from dataclasses import dataclass

from cryptography.fernet import Fernet
from sqlalchemy.orm import Session, sessionmaker

from api.executor import Executor
from api.hosts import HostPool
from api.settings import Settings


@dataclass
class Context:
    settings: Settings
    sessions: sessionmaker[Session]
    executor: Executor
    hosts: HostPool
    cipher: Fernet
