"""The spec's usage examples, run as written (imports from symphony_nb)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from symphony_nb import (
    AgentConfig,
    FileSystemRepository,
    InMemoryRepository,
    ServiceRegistry,
    Task,
    TaskStatus,
)


async def test_basic_in_memory_usage() -> None:
    # Set up registry
    registry = ServiceRegistry.get_instance()

    # Register repositories
    agent_config_repo = InMemoryRepository(AgentConfig)
    task_repo = InMemoryRepository(Task)
    registry.register_repository("agent_config", agent_config_repo)
    registry.register_repository("task", task_repo)

    # Create and persist agent config
    agent_config = AgentConfig(
        name="ExampleAgent",
        role="Assistant",
        instruction_template="You are a helpful assistant named {name}.",
    )
    config_id = await agent_config_repo.save(agent_config)

    # Create and execute task
    task_manager = registry.get_task_manager()
    task = await task_manager.create_task(
        name="Example Task", input_data={"query": "What is Symphony?"}
    )

    # Get agent factory and create agent
    agent_factory = registry.get_agent_factory()
    agent = await agent_factory.create_agent(config_id)

    # Execute task
    result_task = await task_manager.execute_task(task.id, agent)

    assert agent.instructions == "You are a helpful assistant named ExampleAgent."
    assert result_task.status is TaskStatus.COMPLETED
    assert "What is Symphony?" in result_task.output_data["response"]
    assert await task_repo.find_by_id(task.id) == result_task


async def test_file_system_example(tmp_path: Path) -> None:
    task = Task(name="Persisted")
    repo = FileSystemRepository(Task, str(tmp_path))
    task_id = await repo.save(task)
    tasks = await repo.find_all({"status": TaskStatus.PENDING})
    assert [t.id for t in tasks] == [task_id]


def test_file_system_persistence_across_processes(tmp_path: Path) -> None:
    writer = textwrap.dedent(
        """
        import asyncio, os
        from symphony_nb import *

        async def main():
            data_dir = os.path.join(os.getcwd(), "symphony_data")
            os.makedirs(data_dir, exist_ok=True)
            registry = ServiceRegistry.get_instance()
            agent_config_repo = FileSystemRepository(AgentConfig, data_dir)
            task_repo = FileSystemRepository(Task, data_dir)
            registry.register_repository("agent_config", agent_config_repo)
            registry.register_repository("task", task_repo)
            config_id = await agent_config_repo.save(AgentConfig(
                name="ExampleAgent", role="Assistant",
                instruction_template="You are a helpful assistant named {name}."))
            manager = registry.get_task_manager()
            task = await manager.create_task(name="Example Task", input_data={"query": "What is Symphony?"})
            agent = await registry.get_agent_factory().create_agent(config_id)
            await manager.execute_task(task.id, agent)
            print(task.id, config_id)

        asyncio.run(main())
        """
    )
    reader = textwrap.dedent(
        """
        import asyncio, os, sys
        from symphony_nb import *

        async def main():
            data_dir = os.path.join(os.getcwd(), "symphony_data")
            tasks = await FileSystemRepository(Task, data_dir).find_all({"status": TaskStatus.COMPLETED})
            config = await FileSystemRepository(AgentConfig, data_dir).find_by_id(sys.argv[2])
            assert [t.id for t in tasks] == [sys.argv[1]], tasks
            assert config.name == "ExampleAgent"
            print("ok", tasks[0].output_data["response"])

        asyncio.run(main())
        """
    )
    env = {**os.environ, "PYTHONWARNINGS": "error::ResourceWarning"}
    first = subprocess.run(
        [sys.executable, "-c", writer],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    task_id, config_id = first.stdout.split()
    second = subprocess.run(
        [sys.executable, "-c", reader, task_id, config_id],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert second.returncode == 0, second.stderr
    assert second.stdout.startswith("ok") and "What is Symphony?" in second.stdout
    assert sorted(os.listdir(tmp_path / "symphony_data")) == ["agentconfig", "task"]
