// Package order is the root of the order service module, which implements
// meshmart.order.v1.OrderService: orders paid through the payment service, cancellation with
// refunds, and order tracking. Its entry point is cmd/order; the domain, transport and storage
// layers live under internal/.
package order
