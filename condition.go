package rowcast

// Condition restricts rows to those whose Column, as text, is one of
// Values. Delivery builds them from filters and visibility; capture turns
// them into SQL for snapshots.
type Condition struct {
	Column string
	Values []string
	// EmptyMatchesNull makes "" match a NULL value too, as filters do
	// live (and as the stats count NULL under ""). Visibility rules
	// never match NULL.
	EmptyMatchesNull bool
}
