// A world map drawn here, without tile servers: Natural Earth's 1:110m land (world-atlas, installed by the project's
// npm step and served by this server at /ui/land-110m.json) in an equirectangular SVG, a graticule, and the points.

import { svg } from "./core.js";

const WIDTH = 360;
const HEIGHT = 180;
let land = null; // Promise of the land's SVG path

const project = ([lon, lat]) => [lon + 180, 90 - lat];

// TopoJSON arcs are quantised and delta-encoded; a negative index ~i is arc i reversed.
function decodeArcs(topology) {
  const [sx, sy] = topology.transform?.scale || [1, 1];
  const [tx, ty] = topology.transform?.translate || [0, 0];
  return topology.arcs.map((arc) => {
    let x = 0;
    let y = 0;
    return arc.map(([dx, dy]) => {
      x += dx;
      y += dy;
      return [x * sx + tx, y * sy + ty];
    });
  });
}

function ringPath(ring, arcs) {
  const points = [];
  for (const index of ring) {
    const arc = index >= 0 ? arcs[index] : arcs[~index].slice().reverse();
    points.push(...(points.length ? arc.slice(1) : arc));
  }
  // A ring that crosses the antimeridian jumps from +180 to -180: start a new subpath there instead of drawing a
  // line across the whole map.
  let path = "";
  points.forEach((point, i) => {
    const jump = i > 0 && Math.abs(point[0] - points[i - 1][0]) > 180;
    path += (i === 0 || jump ? "M" : "L") + project(point).map((v) => v.toFixed(2)).join(",");
  });
  return path + "Z";
}

// Fetched and decoded once per page, however many maps are drawing at the same time.
function landPath() {
  land ??= fetch("/ui/land-110m.json").then((answer) => answer.json()).then((topology) => {
    const arcs = decodeArcs(topology);
    const parts = [];
    for (const object of Object.values(topology.objects || {})) {
      for (const geometry of object.geometries || [object]) {
        const polygons = geometry.type === "Polygon" ? [geometry.arcs] : geometry.type === "MultiPolygon" ? geometry.arcs : [];
        for (const polygon of polygons) for (const ring of polygon) parts.push(ringPath(ring, arcs));
      }
    }
    return parts.join("");
  });
  return land;
}

// points: [{ lat, lon, label }]. Returns the <svg>; land is filled in when it has loaded.
export function worldMap(points, title = "Map") {
  const map = svg("svg", { viewBox: `0 0 ${WIDTH} ${HEIGHT}`, class: "map", role: "img", "aria-label": title });
  map.append(svg("rect", { x: 0, y: 0, width: WIDTH, height: HEIGHT, class: "sea" }));
  const landShape = svg("path", { class: "land", d: "" });
  map.append(landShape);
  for (let lon = -150; lon < 180; lon += 30) map.append(svg("line", { x1: lon + 180, y1: 0, x2: lon + 180, y2: HEIGHT, class: "grid" }));
  for (let lat = -60; lat <= 60; lat += 30) map.append(svg("line", { x1: 0, y1: 90 - lat, x2: WIDTH, y2: 90 - lat, class: "grid" }));
  for (const point of points) {
    const [x, y] = project([point.lon, point.lat]);
    const dot = svg("circle", { cx: x.toFixed(2), cy: y.toFixed(2), r: 3, class: "point" });
    const label = svg("title", {});
    label.textContent = point.label || `${point.lat.toFixed(4)}, ${point.lon.toFixed(4)}`;
    dot.append(label);
    map.append(dot);
  }
  landPath().then((d) => landShape.setAttribute("d", d)).catch(() => {});
  return map;
}
