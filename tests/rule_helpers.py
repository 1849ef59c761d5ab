"""Building a local rule from its parts in tests, without a config file."""
from chipsim.engine.rules.objectives import GoodnessObjective
from chipsim.engine.rules.routing import Routing
from chipsim.engine.rules.rows import LabelledRows
from chipsim.engine.rules.compose import LocalRule


def df_rule(strategy: str, learning, negatives: int, depth: int, loss: str = "df") -> LocalRule:
    """greedy / df-o / df-r with DF's (or another goodness) loss, as ``rules.compose`` builds them."""
    span = 1 if strategy == "greedy" else 2
    link = "feedback" if strategy == "df-r" else "weights"
    return LocalRule(LabelledRows(negatives), GoodnessObjective(loss, learning),
                     Routing(depth=depth, span=span, schedule=learning.olu_schedule, link=link))
