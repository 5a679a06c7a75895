"""The road network the vectorizer makes and the GeoPackage holds: centrelines between junctions, with attributes."""

from __future__ import annotations

from dataclasses import dataclass, field

import shapely


@dataclass
class RoadNetwork:
    roads: list[shapely.LineString] = field(default_factory=list)
    road_attributes: list[dict] = field(default_factory=list)
    junctions: list[shapely.Point] = field(default_factory=list)
    junction_attributes: list[dict] = field(default_factory=list)

    @property
    def total_length_m(self) -> float:
        return float(sum(a["length_m"] for a in self.road_attributes))

    @property
    def junction_count(self) -> int:
        """Nodes where three or more roads meet (the junctions layer also holds dead ends, degree 1)."""
        return sum(1 for a in self.junction_attributes if a["degree"] >= 3)

    def summary(self, path) -> dict:
        """What the command line, the worker protocol and the plugin report about a written network."""
        return {"roads": str(path), "road_count": len(self.roads), "length_km": self.total_length_m / 1000,
                "junction_count": self.junction_count}
