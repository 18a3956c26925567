// Package browser holds the browser test of the storefront: headless Chromium, driven with
// chromedp, loads the page from a real gateway in front of the real services, completes a
// shopper's journey through the UI, and checks CORS from two other origins, one allowed and one
// refused. It has no code of its own beyond the test.
package browser
