package money_test

import (
	"testing"

	"github.com/meshmart/meshmart/pkg/money"
)

func TestIsCurrency(t *testing.T) {
	t.Parallel()
	for code, want := range map[string]bool{
		"USD": true, "EUR": true, "JPY": true, "GBP": true, "CHF": true, "BHD": true,
		// Withdrawn, testing, no currency, precious metal, not a code, wrong case, empty.
		"DEM": false, "XTS": false, "XXX": false, "XAU": false, "ABC": false, "ZZZ": false, "usd": false, "": false,
	} {
		if got := money.IsCurrency(code); got != want {
			t.Errorf("IsCurrency(%q) = %v, want %v", code, got, want)
		}
		if err := money.CheckCurrency("currency_code", code); (err == nil) != want {
			t.Errorf("CheckCurrency(%q) = %v", code, err)
		}
	}
}
