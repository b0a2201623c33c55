"""A pinhole camera in world coordinates (metres; x east, y north, z up)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from lpn_edge.errors import LpnEdgeError

NEAR = 0.5  # metres: geometry closer to the image plane than this is clipped


@dataclass(frozen=True)
class Camera:
    """``rotation`` maps world directions to camera axes (rows: right, down, forward); ``focal`` in pixels."""

    position: np.ndarray  # (3,)
    rotation: np.ndarray  # (3, 3)
    focal: float
    width: int
    height: int

    @classmethod
    def look_at(
        cls, position, target, vertical_fov_deg: float, width: int, height: int, roll_deg: float = 0.0
    ) -> Camera:
        position, target = np.asarray(position, np.float64), np.asarray(target, np.float64)
        forward = target - position
        forward /= np.linalg.norm(forward)
        right = np.cross(forward, [0.0, 0.0, 1.0])
        if np.linalg.norm(right) < 1e-6:
            raise LpnEdgeError("a camera looking straight down needs a heading; tilt it slightly")
        right /= np.linalg.norm(right)
        down = np.cross(forward, right)
        roll = math.radians(roll_deg)
        right, down = right * math.cos(roll) + down * math.sin(roll), down * math.cos(roll) - right * math.sin(roll)
        focal = (height / 2) / math.tan(math.radians(vertical_fov_deg) / 2)
        return cls(position, np.stack([right, down, forward]), focal, width, height)

    def pixel_rays(self) -> np.ndarray:
        """World directions (height, width, 3) through the pixel centres, scaled so the forward component is 1."""
        u = (np.arange(self.width) + 0.5 - self.width / 2) / self.focal
        v = (np.arange(self.height) + 0.5 - self.height / 2) / self.focal
        right, down, forward = self.rotation
        # d_world = R^T d_cam, written out: a (H*W, 3) @ (3, 3) matmul would go through multi-threaded BLAS
        return u[None, :, None] * right + v[:, None, None] * down + forward

    def to_camera(self, points: np.ndarray) -> np.ndarray:
        """World points (N, 3) -> camera coordinates (N, 3): x right, y down, z forward (depth)."""
        return (np.asarray(points, np.float64) - self.position) @ self.rotation.T

    def to_pixels(self, camera_points: np.ndarray) -> np.ndarray:
        """Camera coordinates (N, 3) with z > 0 -> pixel coordinates (N, 2) (x right, y down, image corner at 0)."""
        z = camera_points[:, 2:3]
        return camera_points[:, :2] / z * self.focal + (self.width / 2, self.height / 2)


def clip_near(camera_points: np.ndarray) -> np.ndarray:
    """Clip a convex polygon (N, 3) in camera coordinates to the half-space z >= NEAR (Sutherland-Hodgman)."""
    out = []
    count = len(camera_points)
    for i in range(count):
        current, following = camera_points[i], camera_points[(i + 1) % count]
        current_in, following_in = current[2] >= NEAR, following[2] >= NEAR
        if current_in:
            out.append(current)
        if current_in != following_in:
            t = (NEAR - current[2]) / (following[2] - current[2])
            out.append(current + t * (following - current))
    return np.array(out).reshape(-1, 3)
