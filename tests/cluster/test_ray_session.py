from __future__ import annotations


def test_shared_ray_is_on_loopback(ray_session) -> None:
    ray = ray_session
    nodes = [n for n in ray.nodes() if n["Alive"]]
    assert len(nodes) == 1
    assert nodes[0]["NodeManagerAddress"] == "127.0.0.1"

    @ray.remote
    def square(x: int) -> int:
        return x * x

    assert ray.get([square.remote(i) for i in range(4)]) == [0, 1, 4, 9]
