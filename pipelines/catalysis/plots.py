"""Publication figures for SAC screening (matplotlib, Agg backend; no display needed).

Every function returns a ``matplotlib.figure.Figure`` built with the object API (no pyplot
state, so it is safe in worker threads and embeds in Qt with ``FigureCanvasQTAgg``);
``save_figure`` writes PNG (200 dpi) and SVG (text kept as text).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

STYLE: dict[str, object] = {
    "font.family": "DejaVu Sans",
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 10.5,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "legend.fontsize": 8.5,
    "axes.linewidth": 0.9,
    "xtick.direction": "in",
    "ytick.direction": "in",
    "xtick.major.size": 4,
    "ytick.major.size": 4,
    "xtick.top": True,
    "ytick.right": True,
    "svg.fonttype": "none",
    "mathtext.default": "regular",
}

# One colour per adsorbate (colour-blind-safe Tol "muted" + extras), stable across figures.
ADSORBATE_COLOURS: dict[str, str] = {
    "CO2": "#332288",
    "COOH": "#88CCEE",
    "CO": "#44AA99",
    "CHO": "#117733",
    "CH2O": "#999933",
    "OCH3": "#DDCC77",
    "O": "#CC6677",
    "OH": "#882255",
    "H": "#AA4499",
}


def _subscripts(name: str) -> str:
    """Chemical formula with subscript digits for mathtext: 'CH2O' -> 'CH$_2$O'."""
    out = []
    for ch in name:
        out.append(f"$_{ch}$" if ch.isdigit() else ch)
    return "".join(out).replace("$$", "")


def formula(name: str) -> str:
    """Display label of an adsorbate or species ('OCH3' -> '*OCH$_3$'); labels pass through."""
    from tessera.pipelines.catalysis.layout import ADSORBATES

    return f"*{_subscripts(name)}" if name in ADSORBATES else _subscripts(name)


def new_figure(width_in: float, height_in: float) -> Figure:
    """An Agg-backed figure with the screening style applied to its axes as they are made."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width_in, height_in), layout="constrained")


def styled(func):  # type: ignore[no-untyped-def]
    """Decorator: run a figure builder inside the screening rc style."""
    import functools

    @functools.wraps(func)
    def wrapper(*args, **kwargs):  # type: ignore[no-untyped-def]
        import matplotlib

        with matplotlib.rc_context(STYLE):
            return func(*args, **kwargs)

    return wrapper


def save_figure(fig: Figure, stem: str | Path, *, formats: Sequence[str] = ("png", "svg")) -> list[Path]:
    """Write ``stem.png`` (200 dpi) and/or ``stem.svg``; returns the paths written."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in formats:
        path = stem.with_suffix(f".{fmt}")
        fig.savefig(path, dpi=200 if fmt == "png" else None, metadata={"Software": "tessera"} if fmt == "png" else None)
        paths.append(path)
    return paths


@styled
def parity_figure(
    truth_ev: np.ndarray,
    pred_ev: np.ndarray,
    adsorbate: Sequence[str] | np.ndarray,
    *,
    title: str = "",
) -> Figure:
    """Predicted vs reference adsorption energy, coloured by adsorbate, with y = x and ±0.1 eV."""
    truth_ev, pred_ev = np.asarray(truth_ev), np.asarray(pred_ev)
    adsorbate = np.asarray(adsorbate)
    fig = new_figure(4.6, 4.2)
    ax = fig.add_subplot()
    lo = float(min(truth_ev.min(), pred_ev.min())) - 0.2
    hi = float(max(truth_ev.max(), pred_ev.max())) + 0.2
    ax.fill_between([lo, hi], [lo - 0.1, hi - 0.1], [lo + 0.1, hi + 0.1], color="0.9", lw=0, label="±0.1 eV")
    ax.plot([lo, hi], [lo, hi], color="0.3", lw=0.8)
    for z in dict.fromkeys(adsorbate.tolist()):
        m = adsorbate == z
        mae = float(np.abs(pred_ev[m] - truth_ev[m]).mean())
        ax.scatter(truth_ev[m], pred_ev[m], s=10, color=ADSORBATE_COLOURS.get(z, "0.4"), lw=0,
                   label=f"{formula(z)} ({mae:.2f})")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_aspect("equal")
    ax.set_xlabel(r"Reference $E_{ads}$ (eV)")
    ax.set_ylabel(r"Predicted $E_{ads}$ (eV)")
    if title:
        ax.set_title(title)
    ax.legend(loc="upper left", frameon=False, ncol=1, title="adsorbate (MAE, eV)", title_fontsize=8.5,
              handletextpad=0.2, borderaxespad=0.3)
    return fig


# ---------------------------------------------------------------------------------- volcano

SUPPORT_MARKERS: dict[str, str] = {
    "g-C3N4": "o",
    "N-graphene": "s",
    "DV-graphene": "D",
    "C2N": "^",
    "BN": "v",
    "BP": "P",
}
U_L_CMAP = "viridis"
STEP_SHORT: tuple[str, ...] = (
    "CO$_2$→*COOH", "*COOH→*CO", "*CO→*CHO", "*CHO→*CH$_2$O", "*CH$_2$O→*OCH$_3$",
    "*OCH$_3$→*O", "*O→*OH", "*OH→H$_2$O",
)


def _marker(support: str) -> str:
    return SUPPORT_MARKERS.get(support, "X")


def _halo(width: float = 2.0):  # type: ignore[no-untyped-def]
    from matplotlib import patheffects

    return [patheffects.withStroke(linewidth=width, foreground="white")]


def num(x: float, digits: int = 2, *, sign: bool = False) -> str:
    """A number with a true minus sign (U+2212), as typeset figures show it."""
    return (f"{x:+.{digits}f}" if sign else f"{x:.{digits}f}").replace("-", "\u2212")


def support_label(name: str) -> str:
    """Support name with formula subscripts ('g-C3N4' -> 'g-C$_3$N$_4$')."""
    return _subscripts(name)


def _place_labels(fig, ax, points: list[tuple[float, float]], texts: list[str]) -> None:  # type: ignore[no-untyped-def]
    """Annotate points with short labels, each at the first nearby spot that overlaps no other label.

    Greedy search over 8 directions at growing distances (points); a thin leader line links a
    label placed away from its point. matplotlib has no label repulsion of its own.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw_without_rendering()  # settle the constrained layout so data -> pixels is final
    style = {"fontsize": 7.5, "fontweight": "bold", "path_effects": _halo(2.0), "zorder": 5,
             "textcoords": "offset points"}
    marker_boxes = []
    for x, y in points:
        px, py = ax.transData.transform((x, y))
        marker_boxes.append((px - 4, py - 4, px + 4, py + 4))
    placed: list[tuple] = []
    directions = [(1, 1), (1, -1), (-1, 1), (-1, -1), (1, 0), (-1, 0), (0, 1), (0, -1)]
    for (x, y), text in zip(points, texts, strict=True):
        best = None
        for radius in (7, 12, 18, 26, 36):
            for dx, dy in directions:
                align = {"ha": "left" if dx > 0 else "right" if dx < 0 else "center",
                         "va": "bottom" if dy > 0 else "top" if dy < 0 else "center"}
                trial = ax.annotate(text, (x, y), xytext=(dx * radius, dy * radius), **align, **style)
                bb = trial.get_window_extent(renderer)
                trial.remove()
                box = (bb.x0 - 1, bb.y0 - 1, bb.x1 + 1, bb.y1 + 1)
                if not any(_overlap(box, o) for o in placed + marker_boxes):
                    best = ((dx * radius, dy * radius), align, box, radius)
                    break
            if best:
                break
        if best is None:  # crowded: accept a default spot
            best = ((8, 8), {"ha": "left", "va": "bottom"}, (0, 0, 0, 0), 8)
        offset, align, box, radius = best
        arrow = {"arrowstyle": "-", "color": "black", "linewidth": 0.5, "shrinkA": 0, "shrinkB": 2}
        ax.annotate(text, (x, y), xytext=offset, **align, **style, arrowprops=arrow if radius > 10 else None)
        placed.append(box)


def _overlap(a: tuple, b: tuple) -> bool:
    return not (a[2] < b[0] or b[2] < a[0] or a[3] < b[1] or b[3] < a[1])


@styled
def volcano_figure(result, *, label_top: int = 10) -> Figure:  # type: ignore[no-untyped-def]
    """U_L over (G_CO, G_OH) with limiting-step regions; candidates as points, the best numbered."""
    vm = result.volcano
    fig = new_figure(8.4, 5.4)
    gs = fig.add_gridspec(1, 3, width_ratios=[1.0, 0.045, 0.36])
    ax = fig.add_subplot(gs[0])
    cax = fig.add_subplot(gs[1])
    side = fig.add_subplot(gs[2])
    side.axis("off")
    extent = (vm.g_co_ev[0], vm.g_co_ev[-1], vm.g_oh_ev[0], vm.g_oh_ev[-1])
    u_hi = float(np.ceil(vm.u_l_v.max() * 10) / 10)
    u_lo = max(float(np.floor(vm.u_l_v.min() * 10) / 10), u_hi - 2.0)
    im = ax.imshow(vm.u_l_v, origin="lower", extent=extent, aspect="auto", cmap=U_L_CMAP,
                   vmin=u_lo, vmax=u_hi, interpolation="bilinear")
    levels = np.arange(np.ceil(vm.u_l_v.min() * 5) / 5, u_hi + 1e-9, 0.2)
    cs = ax.contour(vm.g_co_ev, vm.g_oh_ev, vm.u_l_v, levels=levels, colors="white", linewidths=0.5, alpha=0.8)
    ax.clabel(cs, fmt="%.1f", fontsize=7, inline=True)
    # borders between limiting-step regions, and each region's step name
    steps = vm.step_index
    ax.contour(vm.g_co_ev, vm.g_oh_ev, steps, levels=np.arange(-0.5, 8.5, 1.0), colors="black",
               linewidths=0.9, linestyles="--")
    yy, xx = np.meshgrid(vm.g_oh_ev, vm.g_co_ev, indexing="ij")
    for k in np.unique(steps):
        m = steps == k
        if m.sum() < 0.03 * m.size:
            continue
        ax.text(float(np.median(xx[m])), float(np.median(yy[m])), f"limited by\n{STEP_SHORT[k]}",
                ha="center", va="center", fontsize=7.5, color="black", path_effects=_halo(2.5), zorder=2)
    cands = [c for c in result.candidates if "CO" in c.g_ev and "OH" in c.g_ev]
    handles = []
    supports = ordered_supports(c.support for c in cands)
    for support in supports:
        pts = [c for c in cands if c.support == support]
        handles.append(ax.scatter([c.g_ev["CO"] for c in pts], [c.g_ev["OH"] for c in pts], marker=_marker(support),
                                  s=24, facecolor="white", edgecolor="black", linewidth=0.7, zorder=3,
                                  label=support_label(support)))
    g_co, g_oh, u_apex = vm.apex
    (apex,) = ax.plot([g_co], [g_oh], marker="*", color="#ffd700", markeredgecolor="black", markersize=12,
                      zorder=4, linestyle="none", label=f"apex, {num(u_apex)} V")
    ax.set_xlim(extent[0], extent[1])
    ax.set_ylim(extent[2], extent[3])
    ax.set_xlabel(r"$\Delta G_{*CO}$ (eV)")
    ax.set_ylabel(r"$\Delta G_{*OH}$ (eV)")
    ax.set_title(r"CO$_2$→CH$_4$ limiting potential over the scaling-relation plane")
    cbar = fig.colorbar(im, cax=cax)
    cbar.set_label(r"$U_L$ (V vs RHE)")
    top = [c for c in cands if np.isfinite(c.u_l_v)][:label_top]
    _place_labels(fig, ax, [(c.g_ev["CO"], c.g_ev["OH"]) for c in top], [str(c.rank) for c in top])
    side.legend(handles=[*handles, apex], loc="upper left", fontsize=7.5, frameon=False, title="support",
                title_fontsize=8, borderaxespad=0.0)
    lines = [f"{c.rank:>2}  {c.metal}/{support_label(c.support)}  {num(c.u_l_v)} V" for c in top]
    side.text(0.0, 0.52, "best candidates, U$_L$ vs RHE\n" + "\n".join(lines), transform=side.transAxes, va="top",
              ha="left", fontsize=7.5, linespacing=1.35)
    return fig


def ordered_supports(names) -> list[str]:  # type: ignore[no-untyped-def]
    """Distinct support names, the six known ones in their canonical order first."""
    from tessera.pipelines.catalysis.layout import SUPPORTS

    seen = list(dict.fromkeys(names))
    return [s for s in SUPPORTS if s in seen] + [s for s in seen if s not in SUPPORTS]


# --------------------------------------------------------------------------- periodic table


def _periodic_axes(ax, result, support: str, norm, cmap) -> None:  # type: ignore[no-untyped-def]
    from matplotlib.patches import Rectangle

    from tessera.pipelines.catalysis.layout import METALS

    by_metal = {c.metal: c for c in result.candidates if c.support == support}
    periods = sorted({p for p, _ in METALS.values()})
    for metal, (period, group) in METALS.items():
        x, y = group - 3, periods.index(period)
        c = by_metal.get(metal)
        ok = c is not None and np.isfinite(c.u_l_v)
        face = cmap(norm(c.u_l_v)) if ok else "#f0f0f0"
        ax.add_patch(Rectangle((x + 0.04, y + 0.04), 0.92, 0.92, facecolor=face, edgecolor="0.35", linewidth=0.6))
        if ok:
            lum = 0.299 * face[0] + 0.587 * face[1] + 0.114 * face[2]
            ink = "black" if lum > 0.5 else "white"
            ax.text(x + 0.5, y + 0.58, metal, ha="center", va="center", fontsize=10, fontweight="bold", color=ink)
            ax.text(x + 0.5, y + 0.25, num(c.u_l_v), ha="center", va="center", fontsize=7, color=ink)
        else:
            ax.text(x + 0.5, y + 0.5, metal, ha="center", va="center", fontsize=9, color="0.6")
    best = [c for c in result.candidates if c.support == support and np.isfinite(c.u_l_v)]
    if best:
        top = max(best, key=lambda c: c.u_l_v)
        p, g = METALS.get(top.metal, (None, None))
        if p is not None:
            ax.add_patch(Rectangle((g - 3 + 0.02, periods.index(p) + 0.02), 0.96, 0.96, fill=False,
                                   edgecolor="#d62728", linewidth=1.8))
    ax.set_xlim(0, 10)
    ax.set_ylim(len(periods), 0)
    ax.set_aspect("equal")
    ax.set_xticks(np.arange(10) + 0.5, [str(g) for g in range(3, 13)], fontsize=7.5)
    ax.set_yticks(np.arange(len(periods)) + 0.5, [f"{p - 1}d" for p in periods], fontsize=8)
    ax.tick_params(length=0, top=False, right=False)
    for side in ax.spines.values():
        side.set_visible(False)
    ax.set_title(support_label(support))


def _u_l_norm(result):  # type: ignore[no-untyped-def]
    from matplotlib.colors import Normalize

    vals = np.array([c.u_l_v for c in result.candidates if np.isfinite(c.u_l_v)])
    lo = float(np.floor(vals.min() * 10) / 10) if vals.size else -2.0
    hi = float(np.ceil(vals.max() * 10) / 10) if vals.size else 0.0
    return Normalize(vmin=lo, vmax=max(hi, lo + 0.1))


@styled
def periodic_table_figure(result, support: str) -> Figure:  # type: ignore[no-untyped-def]
    """Limiting-potential periodic table of one support: metals in place, coloured by U_L."""
    import matplotlib

    cmap = matplotlib.colormaps[U_L_CMAP]
    norm = _u_l_norm(result)
    fig = new_figure(6.4, 2.7)
    ax = fig.add_subplot()
    _periodic_axes(ax, result, support, norm, cmap)
    ax.set_title(f"Limiting potential on {support_label(support)} (best framed in red)")
    ax.set_xlabel("group")
    cbar = fig.colorbar(matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, pad=0.02, fraction=0.05)
    cbar.set_label(r"$U_L$ (V vs RHE)")
    return fig


@styled
def periodic_tables_figure(result, supports: Sequence[str]) -> Figure:  # type: ignore[no-untyped-def]
    """All supports' periodic tables on one shared U_L colour scale."""
    import matplotlib

    cmap = matplotlib.colormaps[U_L_CMAP]
    norm = _u_l_norm(result)
    ncol = 2 if len(supports) > 1 else 1
    nrow = int(np.ceil(len(supports) / ncol))
    fig = new_figure(5.2 * ncol + 0.6, 2.05 * nrow + 0.4)
    axes = fig.subplots(nrow, ncol, squeeze=False)
    for ax, support in zip(axes.flat, supports, strict=False):
        _periodic_axes(ax, result, support, norm, cmap)
    for ax in list(axes.flat)[len(supports) :]:
        ax.set_visible(False)
    cbar = fig.colorbar(matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap), ax=axes, pad=0.01, fraction=0.025,
                        aspect=35)
    cbar.set_label(r"$U_L$ (V vs RHE)")
    fig.suptitle(r"CO$_2$→CH$_4$ limiting potential by support (best per support framed in red)")
    return fig


# ------------------------------------------------------------------------- free energies


def _path_axes(ax, states_ev: np.ndarray, *, colour: str, label: str, step_index: int | None = None,
               linestyle: str = "-", hot_colour: str = "#d62728") -> None:  # type: ignore[no-untyped-def]
    for n, g in enumerate(states_ev):
        ax.plot([n - 0.3, n + 0.3], [g, g], color=colour, linewidth=2.2, linestyle=linestyle, solid_capstyle="butt",
                label=label if n == 0 else None)
        if n + 1 < len(states_ev):
            hot = step_index is not None and n == step_index
            ax.plot([n + 0.3, n + 0.7], [g, states_ev[n + 1]], color=hot_colour if hot else colour,
                    linewidth=1.8 if hot else 0.8, linestyle="-" if hot else ":")


def _state_ticks(ax) -> None:  # type: ignore[no-untyped-def]
    from tessera.pipelines.catalysis.che import STATE_LABELS

    ax.set_xticks(range(len(STATE_LABELS)), [_subscripts(s) for s in STATE_LABELS], rotation=35, ha="right",
                  fontsize=8.5)
    ax.set_xlim(-0.5, len(STATE_LABELS) - 0.5)
    ax.axhline(0.0, color="0.75", linewidth=0.6, zorder=0)
    ax.set_ylabel(r"$\Delta G$ (eV)")
    ax.tick_params(axis="x", top=False)


@styled
def free_energy_figure(candidate, settings) -> Figure:  # type: ignore[no-untyped-def]
    """One candidate's CO2→CH4 free-energy diagram at 0 V and at U_L (CHE)."""
    from tessera.pipelines.catalysis.che import states_at_potential

    states = candidate.states_ev
    fig = new_figure(6.0, 3.8)
    ax = fig.add_subplot()
    _path_axes(ax, states, colour="black", label="U = 0 V", step_index=candidate.step_index)
    at_ul = states_at_potential(states, candidate.u_l_v)
    _path_axes(ax, at_ul, colour="#1f77b4", label=f"U = U$_L$ = {num(candidate.u_l_v)} V")
    k = candidate.step_index
    # the label sits in the upper right, which the descending CO2->CH4 path leaves free,
    # so it never runs into the title or the axis frame however short the panel; the red
    # segment itself marks the step, so no leader line crosses the plot
    ax.text(0.98, 0.95, f"limiting step (red): {candidate.limiting_step}, "
            f"ΔG = {num(candidate.steps_ev[k])} eV", transform=ax.transAxes, ha="right", va="top",
            fontsize=8, color="#d62728")
    _state_ticks(ax)
    src = "" if candidate.source == "direct" else " (missing intermediates from scaling)"
    ax.set_title(f"{candidate.metal}/{support_label(candidate.support)}: U$_L$ = {num(candidate.u_l_v)} V vs RHE{src}")
    ax.legend(loc="lower left", frameon=False)
    return fig


@styled
def free_energy_comparison_figure(candidates, settings) -> Figure:  # type: ignore[no-untyped-def]
    """The top candidates' free-energy diagrams at 0 V on one plot."""
    import matplotlib

    colours = matplotlib.colormaps["tab10"].colors
    fig = new_figure(6.4, 4.0)
    ax = fig.add_subplot()
    for i, c in enumerate(candidates):
        colour = colours[i % 10]
        _path_axes(ax, c.states_ev, colour=colour, step_index=c.step_index, hot_colour=colour,
                   label=f"#{c.rank} {c.metal}/{support_label(c.support)} ({num(c.u_l_v)} V)")
    _state_ticks(ax)
    ax.set_title(f"Top {len(candidates)} candidates at U = 0 V vs RHE (limiting step drawn solid)")
    ax.legend(loc="lower left", frameon=False, fontsize=7.5)
    return fig


# ------------------------------------------------------------------------------- scaling


@styled
def scaling_figure(result) -> Figure:  # type: ignore[no-untyped-def]
    """Each fitted intermediate: G from the model vs G from its hybrid scaling relation."""
    names = [z for z in result.fits if z not in ("CO", "OH")]
    ncol = min(4, len(names))
    nrow = int(np.ceil(len(names) / ncol))
    fig = new_figure(2.45 * ncol, 2.45 * nrow + 0.3)
    axes = fig.subplots(nrow, ncol, squeeze=False)
    g_co = np.array([c.g_ev.get("CO", np.nan) for c in result.candidates])
    g_oh = np.array([c.g_ev.get("OH", np.nan) for c in result.candidates])
    for ax, z in zip(axes.flat, names, strict=False):
        f = result.fits[z]
        y = np.array([c.g_ev.get(z, np.nan) for c in result.candidates])
        x = f.predict(g_co, g_oh)
        ok = np.isfinite(x) & np.isfinite(y)
        lo, hi = float(min(x[ok].min(), y[ok].min())) - 0.15, float(max(x[ok].max(), y[ok].max())) + 0.15
        ax.plot([lo, hi], [lo, hi], color="0.4", linewidth=0.7)
        ax.scatter(x[ok], y[ok], s=7, color=ADSORBATE_COLOURS.get(z, "0.3"), linewidth=0)
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        ax.set_aspect("equal")
        ax.set_title(f"{formula(z)}", fontsize=9.5)
        ax.text(0.04, 0.96, f"{num(f.a_co)}·G$_{{CO}}$ {num(f.b_oh, sign=True)}·G$_{{OH}}$ {num(f.c_ev, sign=True)}\n"
                f"R² {f.r2:.3f}, MAE {f.mae_ev:.3f} eV", transform=ax.transAxes, va="top", fontsize=6.5)
        ax.tick_params(labelsize=7.5)
    for ax in list(axes.flat)[len(names) :]:
        ax.set_visible(False)
    fig.supxlabel("G from scaling relation (eV)", fontsize=9.5)
    fig.supylabel("G from predicted E$_{ads}$ (eV)", fontsize=9.5)
    fig.suptitle("Hybrid scaling relations G$_Z$ = a·G$_{CO}$ + b·G$_{OH}$ + c", fontsize=10.5)
    return fig


# ------------------------------------------------------------------------- DOS and explain


@styled
def dos_figure(edos: np.ndarray, *, adsorbate: str | None = None, title: str = "") -> Figure:
    """A sample's eDOS: metal d orbitals (and s+p), and each adsorbate atom summed over orbitals."""
    from tessera.pipelines.catalysis.layout import ADSORBATE_ATOMS, D_ORBITALS, energy_grid_ev

    e = energy_grid_ev()
    fig = new_figure(6.2, 4.4)
    top, bottom = fig.subplots(2, 1, sharex=True)
    colours = ["#332288", "#88CCEE", "#44AA99", "#117733", "#CC6677"]
    for k, name in enumerate(D_ORBITALS):
        top.plot(e, edos[:, 4 + k, 0], linewidth=0.9, color=colours[k], label=_orbital_label(name))
    top.plot(e, edos[:, :4, 0].sum(axis=1), linewidth=0.8, color="0.5", linestyle="--", label="s + p")
    top.set_ylabel("metal PDOS (states/eV)")
    top.legend(ncol=3, fontsize=7.5, frameon=False, loc="upper left")
    atoms = ADSORBATE_ATOMS.get(adsorbate or "", ())
    for ch in range(1, edos.shape[2]):
        curve = edos[:, :, ch].sum(axis=1)
        if not np.any(curve):
            continue
        label = f"{atoms[ch - 1]} (atom {ch})" if ch - 1 < len(atoms) else f"channel {ch}"
        bottom.plot(e, curve, linewidth=0.9, label=label)
    bottom.set_ylabel("adsorbate PDOS (states/eV)")
    bottom.set_xlabel(r"$E - E_F$ (eV)")
    if bottom.lines:
        bottom.legend(fontsize=7.5, frameon=False, loc="upper left")
    for ax in (top, bottom):
        ax.axvline(0.0, color="0.3", linewidth=0.6, linestyle=":")
    bottom.set_xlim(e[0], e[-1])
    if title:
        top.set_title(title)
    return fig


def _orbital_label(name: str) -> str:
    return {"dxy": "d$_{xy}$", "dyz": "d$_{yz}$", "dz2": "d$_{z^2}$", "dxz": "d$_{xz}$",
            "dx2-y2": "d$_{x^2-y^2}$", "py": "p$_y$", "pz": "p$_z$", "px": "p$_x$"}.get(name, name)


@styled
def occlusion_figure(result, edos: np.ndarray, *, title: str = "") -> Figure:  # type: ignore[no-untyped-def]
    """Occlusion map (ΔE_ads per window and orbital) over the metal channel's DOS."""
    from matplotlib.colors import TwoSlopeNorm

    from tessera.pipelines.catalysis.layout import ORBITALS, energy_grid_ev

    e = energy_grid_ev()
    fig = new_figure(6.6, 5.0)
    gs = fig.add_gridspec(2, 1, height_ratios=[1.0, 1.4])
    ax_dos = fig.add_subplot(gs[0])
    ax_map = fig.add_subplot(gs[1], sharex=ax_dos)
    d = edos[:, 4:9, result.channel].sum(axis=1)
    ax_dos.fill_between(e, d, color="#88CCEE", alpha=0.6, linewidth=0, label="d (sum)")
    ax_dos.plot(e, edos[:, :4, result.channel].sum(axis=1), color="0.4", linewidth=0.8, label="s + p")
    ax2 = ax_dos.twinx()
    ax2.plot(result.centres_ev, result.delta_ev[0], color="#d62728", linewidth=1.2, label="ΔE$_{ads}$ (all orbitals)")
    ax2.axhline(0.0, color="#d62728", linewidth=0.5, linestyle=":")
    ax2.set_ylabel(r"ΔE$_{ads}$ (eV)", color="#d62728")
    ax2.tick_params(axis="y", colors="#d62728")
    ax_dos.set_ylabel("metal PDOS (states/eV)")
    lines = ax_dos.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax_dos.legend(lines[0] + lines2[0], lines[1] + lines2[1], fontsize=7.5, frameon=False, loc="upper left")
    ax_dos.tick_params(labelbottom=False)
    delta = result.delta_ev[1:]
    vmax = float(max(np.abs(delta).max(), 1e-3))
    step = result.centres_ev[1] - result.centres_ev[0] if result.centres_ev.size > 1 else result.window_ev
    im = ax_map.imshow(delta, aspect="auto", cmap="RdBu_r", norm=TwoSlopeNorm(0.0, -vmax, vmax),
                       extent=(result.centres_ev[0] - step / 2, result.centres_ev[-1] + step / 2, len(ORBITALS) - 0.5, -0.5),
                       interpolation="nearest")
    ax_map.set_yticks(range(len(ORBITALS)), [_orbital_label(o) for o in ORBITALS], fontsize=8)
    ax_map.axhline(3.5, color="black", linewidth=0.6)
    ax_map.set_xlabel(r"$E - E_F$ (eV), centre of the occluded window")
    ax_map.set_ylabel("occluded orbital")
    for a in (ax_dos, ax_map):
        a.axvline(0.0, color="0.2", linewidth=0.6, linestyle=":")
    ax_map.set_xlim(e[0], e[-1])
    cbar = fig.colorbar(im, ax=ax_map, pad=0.01)
    cbar.set_label(r"ΔE$_{ads}$ (eV)")
    ax_dos.set_title(title or f"Occlusion of the metal channel ({result.window_ev:g} eV windows); "
                     f"E$_{{ads}}$ = {num(result.baseline_ev)} eV", fontsize=10)
    return fig


@styled
def shifting_figure(result, *, title: str = "", reference_slope: float | None = None) -> Figure:  # type: ignore[no-untyped-def]
    """Predicted E_ads vs rigid shift of all / single d orbitals, with fitted slopes."""
    fig = new_figure(5.6, 4.0)
    ax = fig.add_subplot()
    colours = ["black", "#332288", "#88CCEE", "#44AA99", "#117733", "#CC6677"]
    slopes = result.slopes()
    for i, target in enumerate(result.targets):
        label = "all d" if target == "all d" else _orbital_label(target)
        ax.plot(result.shifts_ev, result.e_ads_ev[i], marker="o", markersize=3, linewidth=1.6 if i == 0 else 1.0,
                color=colours[i % len(colours)], label=f"{label} ({num(slopes[target], sign=True)} eV/eV)")
    if reference_slope is not None:
        base = float(np.interp(0.0, result.shifts_ev, result.e_ads_ev[0]))
        ax.plot(result.shifts_ev, base + reference_slope * result.shifts_ev, color="0.5", linestyle="--",
                linewidth=1.0, label=f"d-band model ({num(reference_slope, sign=True)} eV/eV)")
    ax.axvline(0.0, color="0.6", linewidth=0.6, linestyle=":")
    ax.set_xlabel("shift of the metal d states (eV; + = toward/above E$_F$)")
    ax.set_ylabel(r"predicted $E_{ads}$ (eV)")
    ax.set_title(title or "Orbital-shifting experiment")
    ax.legend(fontsize=7.5, frameon=False, title="shifted (slope)", title_fontsize=7.5)
    return fig
