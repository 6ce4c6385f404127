"""The Pareto-front plot of a search: score against MAdds, coloured by parameters.

Every evaluated architecture is a grey dot, the non-dominated ones are coloured by their
parameter count, and the released MUXNets are marked at their MAdds (with their score where the
search has one for them).
"""
import numpy as np


def plot_front(search, path: str, released: dict) -> None:
    """Write the plot of ``search`` (an :class:`~mux_backbones.search.engine.Search`) to PNG.

    Args:
        search: The search.
        path (str): The PNG file.
        released (dict): Per released arch name, its row (``madds`` and, where known,
            ``score``).
    """
    # A figure of its own, not pyplot's: no window, no display needed, and the caller's
    # matplotlib backend (a notebook's, say) is left as it was.
    from matplotlib.figure import Figure

    history, front = search.history, search.pareto_rows()
    fig = Figure(figsize=(7, 4.5), dpi=120)
    ax = fig.subplots()
    ax.scatter([r['madds'] for r in history], [r['score'] for r in history], s=12, c='0.75',
               label=f'evaluated ({len(history)})')
    front = sorted(front, key=lambda r: r['madds'])
    points = ax.scatter([r['madds'] for r in front], [r['score'] for r in front],
                        c=[r['params'] for r in front], cmap='viridis', s=36, edgecolors='k',
                        linewidths=0.5, zorder=3, label=f'Pareto front ({len(front)})')
    fig.colorbar(points, ax=ax, label='params (M)')
    for name, row in released.items():
        madds = row['madds']
        if np.isfinite(row.get('score', np.nan)):
            ax.scatter([madds], [row['score']], marker='*', s=140, c='tab:red', zorder=4)
            ax.annotate(f'MUXNet-{name}', (madds, row['score']), textcoords='offset points',
                        xytext=(4, 4), fontsize=8, color='tab:red')
        else:
            ax.axvline(madds, ls='--', lw=0.8, c='tab:red', alpha=0.6)
            ax.annotate(f'MUXNet-{name}', (madds, 1), xycoords=('data', 'axes fraction'),
                        textcoords='offset points', xytext=(2, -10), fontsize=8,
                        color='tab:red', rotation=90, va='top')
    evaluator = search.settings.evaluator.get('type')
    ax.set_xlabel('MAdds (M, ImageNet classifier at 224x224)')
    ax.set_ylabel(f'score ({evaluator} evaluator)')
    ax.set_title(f'MUXNet search: {search.settings.algorithm}, {len(history)} evaluations, '
                 f'seed {search.settings.seed}', fontsize=10)
    ax.margins(x=0.12, y=0.08)  # room for the labels of the outermost points
    ax.legend(loc='lower right', fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
